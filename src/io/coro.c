/*
 * coro.c - stackful coroutines on ucontext.
 *
 * Switching. Each coroutine keeps two saved contexts: its own (where it
 * stopped in coro_yield()) and its caller's (where the last coro_resume()
 * is waiting). coro_resume() swaps from the caller into the coroutine;
 * coro_yield() swaps back. The thread-local coro_running says who runs
 * now; a resume remembers the previous value (a coroutine may resume
 * another) and restores it when control comes back, so coro_current() is
 * right at every level of nesting.
 *
 * Ending. A coroutine cannot free the stack it is running on. When fn
 * returns, coro_main() marks the coroutine finished and jumps to the
 * caller's context for the last time; the caller, back on its own stack
 * inside coro_resume(), unmaps the coroutine's stack. The struct itself
 * and the user's done callback are deferred to the loop (a posted item
 * embedded in the struct, so no allocation can fail there): coro_resume()
 * is typically called from some request callback whose caller may still
 * use the objects that done would free.
 *
 * Stacks. mmap()ed, with the lowest page PROT_NONE: stacks grow down on
 * every architecture we run on, so an overflow faults on the guard page.
 * MAP_NORESERVE keeps untouched stack pages from counting as committed.
 *
 * AddressSanitizer keeps per-thread knowledge of "the" stack; every switch
 * is therefore announced (start_switch_fiber before swapcontext, finish
 * after it), and the final switch out of a dying coroutine passes NULL so
 * that ASan drops its fake stack. Shadow memory left poisoned by the
 * coroutine's frames is cleared before the stack is unmapped: a later
 * mapping at the same address would otherwise inherit stale redzones.
 */
#include "lib/lib.h"
#include "coro.h"
#include "ioloop.h"
#include "io-private.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#  define CORO_ASAN 1
#  include <sanitizer/asan_interface.h>
#  include <sanitizer/common_interface_defs.h>
#endif

struct coro {
	struct ioloop *loop;		/* borrowed */
	ucontext_t context;		/* ours, while suspended */
	ucontext_t caller_context;	/* the waiting coro_resume() */
	struct coro *resumer;		/* coroutine that resumed us, or NULL */

	void (*fn)(void *ctx);
	void (*done)(void *ctx);
	void *ctx;			/* the user's, never touched */

	unsigned char *map;		/* owned: guard page + stack */
	size_t map_size;
	size_t stack_size;		/* usable bytes above the guard */

	bool running;			/* between resume and yield/end */
	bool finished;			/* fn returned */
	struct ioloop_post_item done_item;	/* runs coro_done_run() */

#ifdef CORO_ASAN
	void *asan_fake_stack;		/* ASan's, saved while suspended */
	const void *caller_stack_bottom;
	size_t caller_stack_size;
#endif
};

static __thread struct coro *coro_running;
static __thread unsigned int coro_live;

struct coro *coro_current(void)
{
	return coro_running;
}

struct ioloop *coro_get_loop(const struct coro *coro)
{
	return coro->loop;
}

unsigned int coro_live_count(void)
{
	return coro_live;
}

/*
 * Stacks
 */

static size_t coro_page_size(void)
{
	long size = sysconf(_SC_PAGESIZE);

	return size > 0 ? (size_t)size : 4096;
}

/* coro_stack_alloc - map the guard page and the stack above it */
static void coro_stack_alloc(struct coro *coro, size_t stack_size)
{
	size_t page = coro_page_size();

	if (stack_size == 0)
		stack_size = CORO_DEFAULT_STACK_SIZE;
	stack_size = (stack_size + page - 1) / page * page;
	coro->stack_size = stack_size;
	coro->map_size = stack_size + page;
	coro->map = mmap(NULL, coro->map_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK |
			 MAP_NORESERVE, -1, 0);
	if (coro->map == MAP_FAILED)
		log_fatal("coro: mmap(%zu) for a stack failed: %s",
			  coro->map_size, strerror(errno));
	if (mprotect(coro->map, page, PROT_NONE) < 0)
		log_fatal("coro: mprotect(guard page) failed: %s",
			  strerror(errno));
}

/* coro_stack_free - unmap a stack nobody runs on any more */
static void coro_stack_free(struct coro *coro)
{
	unsigned char *stack = coro->map + (coro->map_size - coro->stack_size);

#ifdef CORO_ASAN
	ASAN_UNPOISON_MEMORY_REGION(stack, coro->stack_size);
#else
	(void)stack;
#endif
	if (munmap(coro->map, coro->map_size) < 0)
		log_panic("coro: munmap of a stack failed: %s",
			  strerror(errno));
	coro->map = NULL;
}

/*
 * Switching
 */

/* coro_main - first and last frame on a coroutine's stack */
static void coro_main(void)
{
	struct coro *coro = coro_running;

#ifdef CORO_ASAN
	__sanitizer_finish_switch_fiber(NULL, &coro->caller_stack_bottom,
					&coro->caller_stack_size);
#endif
	coro->fn(coro->ctx);
	coro->finished = true;
#ifdef CORO_ASAN
	/* NULL: this fiber is gone, ASan may free its fake stack. */
	__sanitizer_start_switch_fiber(NULL, coro->caller_stack_bottom,
				       coro->caller_stack_size);
#endif
	/* Back into coro_resume() for good; it frees this stack. */
	setcontext(&coro->caller_context);
	log_panic("coro: setcontext back to the resumer failed: %s",
		  strerror(errno));
}

/* coro_done_run - loop: the finished coroutine's last act */
static void coro_done_run(void *context)
{
	struct coro *coro = context;
	void (*done)(void *ctx) = coro->done;
	void *ctx = coro->ctx;

	free(coro);
	coro_live--;
	if (done != NULL)
		done(ctx);
}

/* coro_finish - resumer side, after fn returned: free stack, post done */
static void coro_finish(struct coro *coro)
{
	coro_stack_free(coro);
	coro->done_item.fn = coro_done_run;
	coro->done_item.context = coro;
	ioloop_post_item(coro->loop, &coro->done_item);
}

void coro_resume(struct coro *coro)
{
#ifdef CORO_ASAN
	void *fake_stack = NULL;
#endif

	if (coro->finished)
		log_panic("coro_resume: coroutine already finished");
	if (coro->running)
		log_panic("coro_resume: coroutine is running (resumed twice, "
			  "or by itself or by a coroutine it resumed)");
	if (!ioloop_is_current_thread(coro->loop))
		log_panic("coro_resume: not on the thread of loop %s",
			  ioloop_name(coro->loop));

	coro->resumer = coro_running;
	coro->running = true;
	coro_running = coro;
#ifdef CORO_ASAN
	__sanitizer_start_switch_fiber(&fake_stack,
				       coro->map + (coro->map_size -
						    coro->stack_size),
				       coro->stack_size);
#endif
	if (swapcontext(&coro->caller_context, &coro->context) < 0)
		log_panic("coro_resume: swapcontext failed: %s",
			  strerror(errno));
#ifdef CORO_ASAN
	__sanitizer_finish_switch_fiber(fake_stack, NULL, NULL);
#endif
	coro_running = coro->resumer;
	coro->resumer = NULL;
	coro->running = false;
	if (coro->finished)
		coro_finish(coro);
}

void coro_yield(void)
{
	struct coro *coro = coro_running;

	if (coro == NULL)
		log_panic("coro_yield called outside a coroutine");
#ifdef CORO_ASAN
	__sanitizer_start_switch_fiber(&coro->asan_fake_stack,
				       coro->caller_stack_bottom,
				       coro->caller_stack_size);
#endif
	if (swapcontext(&coro->context, &coro->caller_context) < 0)
		log_panic("coro_yield: swapcontext failed: %s",
			  strerror(errno));
#ifdef CORO_ASAN
	/* The resumer may be a different stack than last time. */
	__sanitizer_finish_switch_fiber(coro->asan_fake_stack,
					&coro->caller_stack_bottom,
					&coro->caller_stack_size);
#endif
}

struct coro *coro_start(struct ioloop *loop, size_t stack_size,
			void (*fn)(void *ctx), void *ctx,
			void (*done)(void *ctx))
{
	struct coro *coro;

	if (loop == NULL || fn == NULL)
		log_panic("coro_start: loop and fn are required");
	coro = mem_zalloc(sizeof(*coro));
	coro->loop = loop;
	coro->fn = fn;
	coro->ctx = ctx;
	coro->done = done;
	coro_stack_alloc(coro, stack_size);

	if (getcontext(&coro->context) < 0)
		log_panic("coro_start: getcontext failed: %s", strerror(errno));
	coro->context.uc_stack.ss_sp = coro->map +
		(coro->map_size - coro->stack_size);
	coro->context.uc_stack.ss_size = coro->stack_size;
	/* coro_main() never returns; it leaves with setcontext(). */
	coro->context.uc_link = NULL;
	makecontext(&coro->context, coro_main, 0);

	coro_live++;
	coro_resume(coro);
	return coro;
}
