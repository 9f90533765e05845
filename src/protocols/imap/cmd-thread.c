/*
 * cmd-thread.c - THREAD and UID THREAD (RFC 5256 sections 3 and 4):
 * ORDEREDSUBJECT and REFERENCES.
 *
 *   THREAD REFERENCES UTF-8 <search keys>
 *   * THREAD (2)(3 6 (4 23)(44 7 96))
 *
 * Only the messages matching the search keys take part; a message they
 * refer to that is not among them is a dummy like a missing one.
 *
 * The tree. Every message, and every Message-ID referred to but not (yet)
 * seen, is a node: parent, first child, next sibling. REFERENCES builds it
 * message by message (step 1: link the References chain, then the message
 * under its last reference), with an id table (open addressing) from
 * Message-ID to node. Each message's fields are read (header block only),
 * linked and dropped before the next one: memory is one node per message
 * and per distinct id referred to, at most THREAD_REFS_MAX references per
 * message (the last ones: a long References field is usually truncated at
 * the front anyway).
 *
 * No recursion. Threads can be thousands of messages deep and a session
 * runs on a 256 KiB coroutine stack, so every walk over the tree (pruning,
 * sorting siblings, writing the answer) uses a heap array: the nodes in
 * pre-order, processed backwards when children must come before their
 * parent.
 *
 * Loops. A link is never made when the child is already an ancestor of
 * the parent (forged or broken References); duplicate Message-IDs give
 * the later messages ids of their own.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"
#include "imap-search.h"

#include <stdlib.h>
#include <string.h>

/* References kept per message (the last ones). */
#define THREAD_REFS_MAX 128

struct thread_node {
	struct thread_node *parent, *child, *next;	/* tree */
	char *id;		/* owned; NULL when not in the id table */
	char *subject;		/* owned base subject; NULL for a dummy */
	int64_t date;		/* sent date; a dummy: its first child's */
	uint32_t seq, uid;	/* seq 0: dummy */
	uint32_t sort_seq;	/* seq, or a dummy's first child's */
	bool reply;		/* the subject said Re:/Fwd: */
};

struct table_slot {
	const char *key;		/* borrowed from the node */
	struct thread_node *node;
};

/* String -> node, open addressing; size is a power of two. */
struct node_table {
	struct table_slot *slots;	/* owned */
	size_t size, used;
};

struct thread_context {
	struct imap_command *cmd;
	struct imap_client *client;
	bool references;		/* REFERENCES, else ORDEREDSUBJECT */
	struct thread_node root;	/* its children are the root set */
	struct thread_node **nodes;	/* owned: every node, for freeing */
	size_t node_count, node_alloc;
	struct node_table ids;
};

/* ---- nodes and tables -------------------------------------------------- */

/* node_new - a dummy node owned by ctx */
static struct thread_node *node_new(struct thread_context *ctx)
{
	struct thread_node *node = mem_zalloc(sizeof(*node));

	if (ctx->node_count == ctx->node_alloc) {
		ctx->node_alloc = ctx->node_alloc == 0 ? 64 :
			ctx->node_alloc * 2;
		ctx->nodes = mem_realloc(ctx->nodes, ctx->node_alloc *
					 sizeof(*ctx->nodes));
	}
	ctx->nodes[ctx->node_count++] = node;
	return node;
}

/* str_hash - FNV-1a */
static size_t str_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* table_grow - double the table (rehash) */
static void table_grow(struct node_table *t)
{
	struct table_slot *old = t->slots;
	size_t old_size = t->size;

	t->size = old_size == 0 ? 256 : old_size * 2;
	t->slots = mem_calloc(t->size, sizeof(*t->slots));
	for (size_t i = 0; i < old_size; i++) {
		size_t j;
		if (old[i].key == NULL)
			continue;
		j = str_hash(old[i].key) & (t->size - 1);
		while (t->slots[j].key != NULL)
			j = (j + 1) & (t->size - 1);
		t->slots[j] = old[i];
	}
	free(old);
}

/* table_slot - the slot of key: its entry, or the empty slot to fill (the
   caller then sets key and node and increments used) */
static struct table_slot *table_slot(struct node_table *t, const char *key)
{
	size_t i;

	if ((t->used + 1) * 2 > t->size)
		table_grow(t);
	i = str_hash(key) & (t->size - 1);
	while (t->slots[i].key != NULL && strcmp(t->slots[i].key, key) != 0)
		i = (i + 1) & (t->size - 1);
	return &t->slots[i];
}

/* table_free - free the slots */
static void table_free(struct node_table *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* node_for_id - the node of a Message-ID, a new dummy if unknown */
static struct thread_node *node_for_id(struct thread_context *ctx,
				       const char *id)
{
	struct table_slot *slot = table_slot(&ctx->ids, id);

	if (slot->key == NULL) {
		slot->node = node_new(ctx);
		slot->node->id = mem_strdup(id);
		slot->key = slot->node->id;
		ctx->ids.used++;
	}
	return slot->node;
}

/* node_add_child - put child first under parent */
static void node_add_child(struct thread_node *parent,
			   struct thread_node *child)
{
	child->parent = parent;
	child->next = parent->child;
	parent->child = child;
}

/* node_unlink - take node out of its parent's children */
static void node_unlink(struct thread_node *node)
{
	struct thread_node **link;

	if (node->parent == NULL)
		return;
	for (link = &node->parent->child; *link != NULL;
	     link = &(*link)->next) {
		if (*link == node) {
			*link = node->next;
			break;
		}
	}
	node->parent = NULL;
	node->next = NULL;
}

/* would_loop - would making child a child of parent create a loop? */
static bool would_loop(const struct thread_node *parent,
		       const struct thread_node *child)
{
	for (const struct thread_node *p = parent; p != NULL; p = p->parent) {
		if (p == child)
			return true;
	}
	return false;
}

/* ---- step 1: linking (REFERENCES) ---------------------------------------- */

/* ids_parse - the "<...>" ids of a field (white space inside removed),
   at most max: the last ones if keep_last, else the first ones */
static size_t ids_parse(const char *field, char **ids, size_t max,
			bool keep_last)
{
	size_t count = 0;
	const char *p = field;

	while (p != NULL && (p = strchr(p, '<')) != NULL) {
		const char *end = strchr(p + 1, '>');
		struct buffer id;
		if (end == NULL)
			break;
		buffer_init(&id, 0);
		for (const char *q = p + 1; q < end; q++) {
			if (*q != ' ' && *q != '\t')
				(void)buffer_append_byte(&id,
							 (unsigned char)*q);
		}
		p = end + 1;
		if (id.used == 0 || max == 0) {
			buffer_clear(&id);
			continue;
		}
		if (count == max && !keep_last) {
			buffer_clear(&id);
			break;
		}
		if (count == max) {		/* drop the oldest */
			free(ids[0]);
			memmove(ids, ids + 1, (max - 1) * sizeof(*ids));
			count--;
		}
		ids[count++] = buffer_export(&id, NULL);
	}
	return count;
}

/* message_node - the node for a message: its Message-ID's node, or a
   node of its own when it has none or the id is taken */
static struct thread_node *message_node(struct thread_context *ctx,
					const char *message_id)
{
	char *id = NULL;
	struct thread_node *node = NULL;

	if (ids_parse(message_id, &id, 1, false) == 1) {
		node = node_for_id(ctx, id);
		if (node->seq != 0)
			node = NULL;	/* duplicate Message-ID */
		free(id);
	}
	return node != NULL ? node : node_new(ctx);
}

/* references_link - RFC 5256 step 1 for one message */
static void references_link(struct thread_context *ctx,
			    struct thread_node *msg,
			    const struct imap_search_fields *f)
{
	char *refs[THREAD_REFS_MAX];
	struct thread_node *prev = NULL, *cur;
	size_t count;

	count = ids_parse(f->value[IMAP_SEARCH_FIELD_REFERENCES], refs,
			  THREAD_REFS_MAX, true);
	if (count == 0)		/* else the first id of In-Reply-To */
		count = ids_parse(f->value[IMAP_SEARCH_FIELD_IN_REPLY_TO],
				  refs, 1, false);
	for (size_t i = 0; i < count; i++) {
		cur = node_for_id(ctx, refs[i]);
		free(refs[i]);
		if (cur == msg)
			continue;	/* refers to itself */
		/* (A): link the chain; existing parents stay */
		if (prev != NULL && cur->parent == NULL &&
		    !would_loop(prev, cur))
			node_add_child(prev, cur);
		prev = cur;
	}
	/* (B): under the last reference, replacing an older link */
	node_unlink(msg);
	if (prev != NULL && !would_loop(prev, msg))
		node_add_child(prev, msg);
}

/* message_add - read one matching message into the tree */
static void message_add(struct thread_context *ctx,
			const struct mail_record *rec, uint32_t seq)
{
	struct imap_search_fields f;
	struct thread_node *node;

	(void)imap_search_fields_read(ctx->client->box, rec->uid,
				      ctx->references, &f);
	node = ctx->references ?
		message_node(ctx, f.value[IMAP_SEARCH_FIELD_MESSAGE_ID]) :
		node_new(ctx);
	node->seq = node->sort_seq = seq;
	node->uid = rec->uid;
	node->subject = imap_search_base_subject(
		f.value[IMAP_SEARCH_FIELD_SUBJECT], &node->reply);
	if (!imap_search_date_parse(f.value[IMAP_SEARCH_FIELD_DATE],
				    &node->date))
		node->date = rec->internaldate;
	if (ctx->references)
		references_link(ctx, node, &f);
	imap_search_fields_free(&f);
}

/* messages_collect - match every message of the view and add it */
static void messages_collect(struct thread_context *ctx,
			     struct imap_search_program *prog)
{
	struct mailbox *box = ctx->client->box;
	uint32_t count = mailbox_count(box);

	for (uint32_t i = 0; i < count && i < mailbox_count(box); i++) {
		const struct mail_record *rec = mailbox_record(box, i);
		struct mail_record copy;

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		copy = *rec;
		if (imap_search_match(prog, &copy, i + 1))
			message_add(ctx, &copy, i + 1);
	}
}

/* ---- walks --------------------------------------------------------------- */

/* tree_preorder - every node under (and with) top in pre-order; *count_r
   set; caller frees */
static struct thread_node **tree_preorder(struct thread_context *ctx,
					  struct thread_node *top,
					  size_t *count_r)
{
	/* there are at most node_count nodes plus the root */
	struct thread_node **order = mem_calloc(ctx->node_count + 1,
						sizeof(*order));
	struct thread_node **stack = mem_calloc(ctx->node_count + 1,
						sizeof(*stack));
	size_t count = 0, depth = 0;

	stack[depth++] = top;
	while (depth > 0) {
		struct thread_node *n = stack[--depth];
		order[count++] = n;
		for (struct thread_node *c = n->child; c != NULL; c = c->next)
			stack[depth++] = c;	/* visited in reverse: fine */
	}
	free(stack);
	*count_r = count;
	return order;
}

/* prune_children - RFC 5256 step 4 for the children of parent (whose own
   children were pruned already) */
static void prune_children(struct thread_node *parent, bool at_root)
{
	struct thread_node **link = &parent->child;

	while (*link != NULL) {
		struct thread_node *c = *link, *last = NULL;

		if (c->seq != 0 ||
		    (at_root && c->child != NULL && c->child->next != NULL)) {
			link = &c->next;	/* message, or kept dummy */
			continue;
		}
		if (c->child == NULL) {		/* (A) empty dummy: drop */
			*link = c->next;
			continue;
		}
		/* (B) dummy: its children take its place */
		for (struct thread_node *k = c->child; k != NULL; k = k->next) {
			k->parent = parent;
			last = k;
		}
		last->next = c->next;
		*link = c->child;
		c->child = NULL;
	}
}

/* tree_prune - step 4 over the whole tree, children first */
static void tree_prune(struct thread_context *ctx)
{
	size_t count;
	struct thread_node **order = tree_preorder(ctx, &ctx->root, &count);

	for (size_t i = count; i-- > 0; )
		prune_children(order[i], order[i] == &ctx->root);
	free(order);
}

/* node_compare - sent date, then sequence number */
static int node_compare(const void *pa, const void *pb)
{
	const struct thread_node *a = *(struct thread_node *const *)pa;
	const struct thread_node *b = *(struct thread_node *const *)pb;

	if (a->date != b->date)
		return a->date < b->date ? -1 : 1;
	return a->sort_seq < b->sort_seq ? -1 : a->sort_seq > b->sort_seq;
}

/* children_sort - sort the children of parent; a dummy takes the date of
   its (new) first child */
static void children_sort(struct thread_node *parent,
			  struct thread_node ***tmp, size_t *tmp_alloc)
{
	size_t n = 0;
	struct thread_node **link;

	for (struct thread_node *c = parent->child; c != NULL; c = c->next) {
		if (n == *tmp_alloc) {
			*tmp_alloc = *tmp_alloc == 0 ? 64 : *tmp_alloc * 2;
			*tmp = mem_realloc(*tmp, *tmp_alloc * sizeof(**tmp));
		}
		(*tmp)[n++] = c;
	}
	if (n > 1)
		qsort(*tmp, n, sizeof(**tmp), node_compare);
	link = &parent->child;
	for (size_t i = 0; i < n; i++) {
		*link = (*tmp)[i];
		link = &(*tmp)[i]->next;
	}
	*link = NULL;
	if (parent->seq == 0 && n > 0) {
		parent->date = (*tmp)[0]->date;
		parent->sort_seq = (*tmp)[0]->sort_seq;
	}
}

/* tree_sort - step 6: every set of siblings by sent date, bottom up */
static void tree_sort(struct thread_context *ctx)
{
	struct thread_node **tmp = NULL;
	size_t count, tmp_alloc = 0;
	struct thread_node **order = tree_preorder(ctx, &ctx->root, &count);

	for (size_t i = count; i-- > 0; )
		children_sort(order[i], &tmp, &tmp_alloc);
	free(tmp);
	free(order);
}

/* ---- step 5: gathering by subject (REFERENCES) --------------------------- */

/* thread_subject - a root's subject: a dummy's first child's */
static const char *thread_subject(const struct thread_node *node)
{
	if (node->seq == 0)
		node = node->child;
	return node == NULL || node->subject == NULL ? "" : node->subject;
}

/* subjects_index - (A): for each subject the best root: a dummy, else a
   message that is not a reply */
static void subjects_index(struct thread_context *ctx, struct node_table *t)
{
	for (struct thread_node *r = ctx->root.child; r != NULL; r = r->next) {
		const char *subject = thread_subject(r);
		struct table_slot *slot;

		if (*subject == '\0')
			continue;
		slot = table_slot(t, subject);
		if (slot->key == NULL) {
			t->used++;
		} else if (slot->node->seq == 0 ||
			   (r->seq != 0 && !(slot->node->reply && !r->reply))) {
			continue;	/* keep the table's */
		}
		slot->key = subject;
		slot->node = r;
	}
}

/* dummy_over - turn the message node t into a dummy in place (keeping its
   place in the root set and the table) with the message moved to a new
   child; then add r as a child too */
static void dummy_over(struct thread_context *ctx, struct thread_node *t,
		       struct thread_node *r)
{
	struct thread_node *m = node_new(ctx);

	m->subject = t->subject;
	m->date = t->date;
	m->seq = m->sort_seq = t->seq;
	m->uid = t->uid;
	m->reply = t->reply;
	m->child = t->child;
	for (struct thread_node *k = m->child; k != NULL; k = k->next)
		k->parent = m;
	t->subject = NULL;
	t->seq = t->uid = 0;
	t->reply = false;
	t->child = NULL;
	node_add_child(t, r);
	node_add_child(t, m);
}

/* subject_merge - (B) for root r, just taken out of the root set, with the
   table's root t of the same subject */
static void subject_merge(struct thread_context *ctx, struct thread_node *t,
			  struct thread_node *r)
{
	if (t->seq == 0 && r->seq == 0) {	/* both dummies */
		struct thread_node *k = r->child, *next;
		for (; k != NULL; k = next) {
			next = k->next;
			node_add_child(t, k);
		}
		r->child = NULL;
	} else if (t->seq == 0 || (r->reply && !t->reply)) {
		node_add_child(t, r);
	} else {
		dummy_over(ctx, t, r);
	}
}

/* subjects_gather - step 5 */
static void subjects_gather(struct thread_context *ctx)
{
	struct node_table subjects = { NULL, 0, 0 };
	struct thread_node **link = &ctx->root.child;

	subjects_index(ctx, &subjects);
	while (*link != NULL) {
		struct thread_node *r = *link;
		const char *subject = thread_subject(r);
		struct thread_node *t;

		if (*subject == '\0' ||
		    (t = table_slot(&subjects, subject)->node) == r ||
		    t == NULL) {
			link = &r->next;
			continue;
		}
		*link = r->next;	/* out of the root set */
		r->next = NULL;
		r->parent = NULL;
		subject_merge(ctx, t, r);
	}
	table_free(&subjects);
}

/* ---- ORDEREDSUBJECT ------------------------------------------------------ */

/* subject_compare - base subject, sent date, sequence number */
static int subject_compare(const void *pa, const void *pb)
{
	const struct thread_node *a = *(struct thread_node *const *)pa;
	const struct thread_node *b = *(struct thread_node *const *)pb;
	int ret = strcmp(a->subject, b->subject);

	return ret != 0 ? ret : node_compare(pa, pb);
}

/* orderedsubject_build - one thread per base subject: the first message
   the parent, the others its children */
static void orderedsubject_build(struct thread_context *ctx)
{
	size_t n = ctx->node_count;
	struct thread_node **msgs = mem_calloc(n + 1, sizeof(*msgs));
	struct thread_node *parent = NULL, **last = &ctx->root.child;
	struct thread_node **last_child = NULL;

	memcpy(msgs, ctx->nodes, n * sizeof(*msgs));
	qsort(msgs, n, sizeof(*msgs), subject_compare);
	for (size_t i = 0; i < n; i++) {
		struct thread_node *m = msgs[i];
		if (parent == NULL ||
		    strcmp(parent->subject, m->subject) != 0) {
			parent = m;
			m->parent = &ctx->root;
			*last = m;
			last = &m->next;
			last_child = &m->child;
		} else {
			m->parent = parent;
			*last_child = m;
			last_child = &m->next;
		}
	}
	free(msgs);
}

/* ---- output -------------------------------------------------------------- */

/* write_number - " n" (or "n" first in a list) */
static void write_number(struct thread_context *ctx, struct buffer *out,
			 const struct thread_node *n, bool first)
{
	(void)buffer_printf(out, first ? "%u" : " %u",
			    ctx->cmd->uid ? n->uid : n->seq);
}

/* write_thread - one "(...)" thread; a stack instead of recursion: NULL
   entries stand for ")" */
static void write_thread(struct thread_context *ctx, struct buffer *out,
			 struct thread_node *top, struct thread_node **stack)
{
	size_t depth = 0;

	stack[depth++] = top;
	while (depth > 0) {
		struct thread_node *n = stack[--depth];
		bool wrote = false;
		size_t kids = 0, top_index;

		if (n == NULL) {
			(void)buffer_append_byte(out, ')');
			continue;
		}
		(void)buffer_append_byte(out, '(');
		for (;;) {	/* a chain of only children: "a b c" */
			if (n->seq != 0) {
				write_number(ctx, out, n, !wrote);
				wrote = true;
			}
			if (n->child == NULL || n->child->next != NULL)
				break;
			n = n->child;
		}
		stack[depth++] = NULL;
		if (n->child != NULL && wrote)
			(void)buffer_append_byte(out, ' ');
		for (struct thread_node *c = n->child; c != NULL; c = c->next)
			kids++;
		/* the first child on top of the stack: it is popped first */
		depth += kids;
		top_index = depth;
		for (struct thread_node *c = n->child; c != NULL; c = c->next)
			stack[--top_index] = c;
	}
}

/* write_threads - "* THREAD (..)(..)", in pieces */
static int write_threads(struct thread_context *ctx)
{
	/* each node is on the stack at most once, with one ")" marker */
	struct thread_node **stack = mem_calloc(2 * ctx->node_count + 2,
						sizeof(*stack));
	struct buffer out;
	int ret = 0;

	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* THREAD");
	if (ctx->root.child != NULL)
		(void)buffer_append_byte(&out, ' ');
	for (struct thread_node *r = ctx->root.child; r != NULL && ret == 0;
	     r = r->next) {
		write_thread(ctx, &out, r, stack);
		if (out.used > 8192) {
			ret = imap_client_write(ctx->client, out.data,
						out.used);
			buffer_reset(&out);
		}
	}
	(void)buffer_append_str(&out, "\r\n");
	if (ret == 0)
		ret = imap_client_write(ctx->client, out.data, out.used);
	buffer_clear(&out);
	free(stack);
	return ret;
}

/* ---- the command --------------------------------------------------------- */

/* thread_args_parse - algorithm, charset and the search program; false
   after a BAD/NO reply */
static bool thread_args_parse(struct thread_context *ctx,
			      struct imap_search_program **prog_r)
{
	const struct imap_arg *args = ctx->cmd->args;

	if (imap_arg_atom_equals(&args[0], "REFERENCES")) {
		ctx->references = true;
	} else if (!imap_arg_atom_equals(&args[0], "ORDEREDSUBJECT")) {
		imap_command_bad(ctx->cmd, "Unknown thread algorithm");
		return false;
	}
	return imap_search_parse_charset_keys(ctx->cmd, &args[1], prog_r);
}

/* roots_gather - step 2: every node without a parent into the root set */
static void roots_gather(struct thread_context *ctx)
{
	for (size_t i = ctx->node_count; i-- > 0; ) {
		struct thread_node *n = ctx->nodes[i];
		if (n->parent == NULL)
			node_add_child(&ctx->root, n);
	}
}

/* thread_build - the whole algorithm, after the messages are collected */
static void thread_build(struct thread_context *ctx)
{
	if (!ctx->references) {
		orderedsubject_build(ctx);
		tree_sort(ctx);
		return;
	}
	roots_gather(ctx);
	table_free(&ctx->ids);		/* step 3 */
	tree_prune(ctx);
	tree_sort(ctx);			/* so that "first child" is defined */
	subjects_gather(ctx);
	tree_sort(ctx);
}

/* thread_free - free all nodes */
static void thread_free(struct thread_context *ctx)
{
	for (size_t i = 0; i < ctx->node_count; i++) {
		free(ctx->nodes[i]->id);
		free(ctx->nodes[i]->subject);
		free(ctx->nodes[i]);
	}
	free(ctx->nodes);
	table_free(&ctx->ids);
}

/* cmd_thread - THREAD / UID THREAD */
int cmd_thread(struct imap_command *cmd)
{
	struct thread_context ctx;
	struct imap_search_program *prog = NULL;
	int ret;

	memset(&ctx, 0, sizeof(ctx));
	ctx.cmd = cmd;
	ctx.client = cmd->client;
	if (!thread_args_parse(&ctx, &prog))
		return 0;
	messages_collect(&ctx, prog);
	imap_search_free(&prog);
	(void)mailbox_cache_flush(ctx.client->box);
	thread_build(&ctx);
	ret = write_threads(&ctx);
	thread_free(&ctx);
	if (ret < 0)
		return -1;
	imap_command_ok(cmd, "THREAD completed");
	return 0;
}
