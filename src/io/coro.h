#ifndef CM_CORO_H
#define CM_CORO_H
/*
 * coro - stackful coroutines for straight-line code on an ioloop.
 *
 * The mailbox store is written as ordinary sequential C. In the daemon it
 * runs inside a coroutine: when it needs a slow operation (an fsync, a
 * lock wait) it submits the request to the loop and calls coro_yield();
 * the request's callback calls coro_resume() and the code carries on as
 * if the call had simply returned. Meanwhile the loop serves everyone
 * else. (src/maildir/sio.c is the main user.)
 *
 * Each coroutine has its own mmap()ed stack (default CORO_DEFAULT_STACK_SIZE)
 * with a PROT_NONE guard page below it: overflowing the stack is a SIGSEGV
 * at the guard page, never silent corruption of the heap. Keep big
 * buffers off coroutine stacks.
 *
 * Rules:
 *   - A coroutine belongs to the thread (and loop) that started it; it is
 *     only ever resumed on that thread.
 *   - No blocking calls inside a coroutine: it runs on the loop's thread,
 *     so blocking there blocks every session on the loop. Submit a request
 *     and yield instead (or use ioloop_run_blocking()).
 *   - Do not run the loop (ioloop_run()) from inside a coroutine.
 *   - A coroutine must not be resumed while it is running (that includes
 *     resuming itself, or a coroutine that is waiting for a coroutine it
 *     resumed): coro_resume() panics. Resuming a coroutine from inside
 *     another one is allowed; coro_yield() then returns to that one.
 *   - Spurious resumes are possible in principle (a caller bug elsewhere,
 *     or two wake-up sources): code that yields waits in a loop, as in
 *         while (!w->done) coro_yield();
 *   - When fn returns, the coroutine is finished: its stack is freed by
 *     whoever resumed it last (never by the coroutine itself, which is
 *     still running on it), and done(ctx) is posted to the loop, where it
 *     runs from the top level - not inside coro_resume() - so it may free
 *     whatever owned the coroutine. The struct coro is freed just before
 *     done runs; do not use the pointer after that.
 *   - Loop teardown: a coroutine that is suspended when its loop is
 *     destroyed is never resumed; its stack leaks (ioloop_destroy() already
 *     panics if it was waiting for a request of that loop). A done callback
 *     still queued when the loop is destroyed never runs (the loop logs a
 *     warning). Finish every coroutine and run the loop until its done
 *     callback ran before destroying the loop; coro_live_count() helps
 *     checking that.
 *
 * Works under AddressSanitizer: stack switches are announced with
 * __sanitizer_start/finish_switch_fiber in ASan builds.
 */
#include <stddef.h>

struct ioloop;
struct coro;

/* Default stack size (plus one guard page). */
#define CORO_DEFAULT_STACK_SIZE (256 * 1024)

/* Create a coroutine running fn(ctx) on a new stack of stack_size bytes
   (0 = CORO_DEFAULT_STACK_SIZE, rounded up to whole pages) and run it
   at once, until its first coro_yield() or its end. done (may be NULL)
   is posted to loop after fn returned (see above). Must be called on
   loop's thread; may be called from inside another coroutine. Returns
   the coroutine, which is already finished if fn never yielded; the
   pointer stays valid until done runs on the loop. */
struct coro *coro_start(struct ioloop *loop, size_t stack_size,
			void (*fn)(void *ctx), void *ctx,
			void (*done)(void *ctx));
/* The coroutine running on this thread, or NULL outside any coroutine. */
struct coro *coro_current(void);
/* The loop a coroutine was started on. */
struct ioloop *coro_get_loop(const struct coro *coro);
/* Suspend the current coroutine and return to whoever resumed it (or
   started it). Panics outside a coroutine. */
void coro_yield(void);
/* Switch to coro until it yields or finishes. Panics if coro is running
   (see the rules above) or finished. */
void coro_resume(struct coro *coro);
/* Coroutines of this thread that were started and whose done callback
   has not run yet (suspended, running, or finished and waiting for done). */
unsigned int coro_live_count(void);

#endif
