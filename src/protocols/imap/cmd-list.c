/*
 * cmd-list.c - LIST and LSUB (RFC 9051 6.3.9, RFC 3501 6.3.9 LSUB,
 * RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE,
 * RFC 3348 CHILDREN).
 *
 * The store lists every mailbox once (store_list(): existing mailboxes,
 * parents that exist only as a prefix, subscribed names that are gone)
 * with its attributes; this file only filters and formats. A pattern is
 * the reference and the mailbox argument concatenated (RFC 9051); "*"
 * matches anything, "%" anything but the separator "/". The match is a
 * position-set walk (no backtracking), O(pattern x name) per name, so
 * hostile patterns such as "*%*%*%..." cost nothing special; patterns
 * are bounded by LIST_PATTERN_MAX. The "INBOX" prefix of a name matches
 * case-insensitively.
 *
 * Attributes: \HasChildren/\HasNoChildren always (they are free here),
 * special-use always (RFC 6154 allows it), \Subscribed when asked for
 * (RETURN (SUBSCRIBED) or the SUBSCRIBED selection), \NonExistent (or
 * \Noselect for rev1 clients using plain LIST) for names that exist only
 * as parents or as stale subscriptions.
 *
 * Other users' mailboxes (imap-util.h) follow the session's own, under
 * "Other Users/<owner>/": only owners that the store's shared registry
 * names (store_shared_owners(): those that granted this user,
 * "authenticated" or "anyone" a right), and of those only the mailboxes
 * with the lookup right (the store filters). The cost is one registry
 * read per LIST whose patterns can reach the prefix, plus one listing
 * and one ACL read per visible candidate mailbox; patterns that cannot
 * ("INBOX", "Work/%") pay nothing.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


/* Longest reference+pattern accepted (BAD beyond). */
#define LIST_PATTERN_MAX 1024
/* Most patterns in one LIST (a, b, ...). */
#define LIST_PATTERNS_MAX 32

#define SEL_SUBSCRIBED		0x01
#define SEL_RECURSIVEMATCH	0x02
#define SEL_SPECIAL_USE		0x04
#define RET_SUBSCRIBED		0x10
#define RET_STATUS		0x20

struct list_context {
	struct imap_client *client;
	const char *command;		/* "LIST" or "LSUB" */
	unsigned int options;		/* SEL_* | RET_* */
	bool extended;			/* LIST-EXTENDED syntax used */
	unsigned int status_items;	/* RET_STATUS */
	char **patterns;		/* owned, store (UTF-8) form */
	size_t pattern_count;
	struct store_list_entry *entries;	/* owned */
	size_t entry_count;
};

/* match_char - does pattern char p match name char n at position pos? */
static bool match_char(char p, char n, size_t pos, bool inbox)
{
	if (inbox && pos < 5)
		return toupper((unsigned char)p) == n;
	return p == n;
}

/* list_match_step - positions of name reachable after pattern char p */
static bool list_match_step(char p, const char *name, size_t nlen,
			    bool inbox, const bool *cur, bool *next)
{
	bool carry = false, any = false;

	for (size_t j = 0; j <= nlen; j++) {
		if (p == '*' || p == '%') {
			/* zero or more chars ('%': none of them '/') */
			if (carry && p == '%' && name[j - 1] == '/')
				carry = false;
			carry = carry || cur[j];
			next[j] = carry;
		} else {
			next[j] = j > 0 && cur[j - 1] &&
				match_char(p, name[j - 1], j - 1, inbox);
		}
		any = any || next[j];
	}
	return any;
}

/* list_match - glob match of name against pattern ("*" and "%"). Each
   pattern char costs one pass over the name; a literal char advances
   every position, so with collapsed wildcards the walk ends after at
   most about twice the name's length. */
static bool list_match(const char *pattern, const char *name)
{
	size_t nlen = strlen(name);
	bool inbox = strncmp(name, "INBOX", 5) == 0 &&
		(name[5] == '\0' || name[5] == '/');
	bool *cur = mem_calloc(nlen + 1, sizeof(bool));
	bool *next = mem_calloc(nlen + 1, sizeof(bool));
	bool matched = false, alive = true;

	cur[0] = true;
	for (const char *p = pattern; *p != '\0' && alive; p++) {
		bool *tmp;

		alive = list_match_step(*p, name, nlen, inbox, cur, next);
		tmp = cur;
		cur = next;
		next = tmp;
	}
	matched = alive && cur[nlen];
	free(cur);
	free(next);
	return matched;
}

/* list_collapse_wildcards - "*%" "%*" "**" -> "*", "%%" -> "%" */
static void list_collapse_wildcards(char *pattern)
{
	char *out = pattern;

	for (const char *p = pattern; *p != '\0'; p++) {
		bool wild = *p == '*' || *p == '%';

		if (wild && out > pattern && (out[-1] == '*' || out[-1] == '%')) {
			if (*p == '*')
				out[-1] = '*';
			continue;
		}
		*out++ = *p;
	}
	*out = '\0';
}

/* list_match_any - does name match one of the patterns? */
static bool list_match_any(const struct list_context *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->pattern_count; i++) {
		if (list_match(ctx->patterns[i], name))
			return true;
	}
	return false;
}

/* list_add_pattern - reference + pattern in store form; false = bad */
static bool list_add_pattern(struct list_context *ctx, const char *ref,
			     const char *pattern)
{
	const char *error;
	char *joined, *decoded;

	if (ctx->pattern_count >= LIST_PATTERNS_MAX ||
	    strlen(ref) + strlen(pattern) > LIST_PATTERN_MAX)
		return false;
	joined = mem_printf("%s%s", ref, pattern);
	decoded = imap_mailbox_from_client(ctx->client, joined, &error);
	if (decoded != NULL) {
		free(joined);
		joined = decoded;
	}
	list_collapse_wildcards(joined);
	ctx->patterns = mem_realloc(ctx->patterns, (ctx->pattern_count + 1) *
				    sizeof(char *));
	ctx->patterns[ctx->pattern_count++] = joined;
	return true;
}

/* list_parse_selection - "(SUBSCRIBED REMOTE ...)"; false = bad */
static bool list_parse_selection(struct list_context *ctx,
				 const struct imap_arg *arg)
{
	const struct imap_arg *list;
	size_t count;

	if (!imap_arg_get_list(arg, &list, &count))
		return false;
	ctx->extended = true;
	for (size_t i = 0; i < count; i++) {
		if (imap_arg_atom_equals(&list[i], "SUBSCRIBED"))
			ctx->options |= SEL_SUBSCRIBED | RET_SUBSCRIBED;
		else if (imap_arg_atom_equals(&list[i], "RECURSIVEMATCH"))
			ctx->options |= SEL_RECURSIVEMATCH;
		else if (imap_arg_atom_equals(&list[i], "SPECIAL-USE"))
			ctx->options |= SEL_SPECIAL_USE;
		else if (!imap_arg_atom_equals(&list[i], "REMOTE"))
			return false;
	}
	/* RFC 5258 3: RECURSIVEMATCH needs another selection option. */
	return (ctx->options & SEL_RECURSIVEMATCH) == 0 ||
		(ctx->options & (SEL_SUBSCRIBED | SEL_SPECIAL_USE)) != 0;
}

/* list_parse_return - "RETURN (SUBSCRIBED CHILDREN STATUS (...))" */
static bool list_parse_return(struct list_context *ctx,
			      const struct imap_arg *arg)
{
	const struct imap_arg *list;
	size_t count;

	if (!imap_arg_atom_equals(arg, "RETURN") ||
	    !imap_arg_get_list(&arg[1], &list, &count) ||
	    !imap_arg_is_eol(&arg[2]))
		return false;
	ctx->extended = true;
	for (size_t i = 0; i < count; i++) {
		if (imap_arg_atom_equals(&list[i], "SUBSCRIBED")) {
			ctx->options |= RET_SUBSCRIBED;
		} else if (imap_arg_atom_equals(&list[i], "STATUS")) {
			if (i + 1 >= count ||
			    cmd_status_parse_items(&list[++i],
						   &ctx->status_items) < 0 ||
			    !imap_status_items_allowed(ctx->client,
						       ctx->status_items))
				return false;
			ctx->options |= RET_STATUS;
		} else if (!imap_arg_atom_equals(&list[i], "CHILDREN") &&
			   !imap_arg_atom_equals(&list[i], "SPECIAL-USE")) {
			return false;
		}
	}
	return true;
}

/* list_parse_patterns - one pattern or "(p1 p2 ...)"; false = bad */
static bool list_parse_patterns(struct list_context *ctx, const char *ref,
				const struct imap_arg *arg)
{
	const struct imap_arg *list;
	const char *pattern;
	size_t count;

	if (imap_arg_get_astring(arg, &pattern))
		return list_add_pattern(ctx, ref, pattern);
	if (!imap_arg_get_list(arg, &list, &count) || count == 0)
		return false;
	ctx->extended = true;
	for (size_t i = 0; i < count; i++) {
		if (!imap_arg_get_astring(&list[i], &pattern) ||
		    !list_add_pattern(ctx, ref, pattern))
			return false;
	}
	return true;
}

/* list_parse - all LIST arguments; false = BAD */
static bool list_parse(struct list_context *ctx, const struct imap_arg *args,
		       bool *empty_r)
{
	const char *ref, *pattern;

	*empty_r = false;
	if (args[0].type == IMAP_ARG_LIST) {
		if (!list_parse_selection(ctx, &args[0]))
			return false;
		args++;
	}
	if (!imap_arg_get_astring(&args[0], &ref) || imap_arg_is_eol(&args[1]))
		return false;
	if (imap_arg_get_astring(&args[1], &pattern) && *pattern == '\0' &&
	    !ctx->extended) {
		*empty_r = true;
		return imap_arg_is_eol(&args[2]);
	}
	if (!list_parse_patterns(ctx, ref, &args[1]))
		return false;
	if (imap_arg_is_eol(&args[2]))
		return true;
	return list_parse_return(ctx, &args[2]);
}

/* list_append_attrs - the attribute list of one entry */
static void list_append_attrs(const struct list_context *ctx,
			      struct buffer *buf, unsigned int attrs)
{
	static const struct { unsigned int bit; const char *name; } special[] = {
		{ STORE_SPECIAL_DRAFTS, "\\Drafts" },
		{ STORE_SPECIAL_SENT, "\\Sent" },
		{ STORE_SPECIAL_TRASH, "\\Trash" },
		{ STORE_SPECIAL_JUNK, "\\Junk" },
		{ STORE_SPECIAL_ARCHIVE, "\\Archive" },
	};
	bool rev1_plain = !ctx->extended &&
		(ctx->client->enabled & IMAP_ENABLED_REV2) == 0;
	size_t start = buf->used;

	if (strcmp(ctx->command, "LSUB") == 0) {
		if ((attrs & STORE_LIST_NONEXISTENT) != 0)
			buffer_append_str(buf, "\\Noselect");
		return;
	}
	if ((attrs & STORE_LIST_NONEXISTENT) != 0)
		buffer_append_str(buf, rev1_plain ? " \\Noselect" : " \\NonExistent");
	if ((attrs & STORE_LIST_SUBSCRIBED) != 0 &&
	    (ctx->options & RET_SUBSCRIBED) != 0)
		buffer_append_str(buf, " \\Subscribed");
	if ((attrs & STORE_LIST_NONEXISTENT) == 0 ||
	    (attrs & STORE_LIST_HAS_CHILDREN) != 0)
		buffer_append_str(buf, (attrs & STORE_LIST_HAS_CHILDREN) != 0 ?
				  " \\HasChildren" : " \\HasNoChildren");
	for (size_t i = 0; i < N_ELEMENTS(special); i++) {
		if ((attrs & special[i].bit) != 0) {
			buffer_append_byte(buf, ' ');
			buffer_append_str(buf, special[i].name);
		}
	}
	/* Drop the leading space. */
	if (buf->used > start) {
		memmove(buf->data + start, buf->data + start + 1,
			buf->used - start - 1);
		buffer_truncate(buf, buf->used - 1);
	}
}

/* list_has_subscribed_child - a subscribed descendant (RECURSIVEMATCH);
   unmatched: only one that the patterns do not match themselves (LSUB) */
static bool list_has_subscribed_child(const struct list_context *ctx,
				      const char *name, bool unmatched)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < ctx->entry_count; i++) {
		const struct store_list_entry *e = &ctx->entries[i];

		if ((e->attrs & STORE_LIST_SUBSCRIBED) != 0 &&
		    strncmp(e->name, name, len) == 0 && e->name[len] == '/' &&
		    (!unmatched || !list_match_any(ctx, e->name)))
			return true;
	}
	return false;
}

/* list_send_entry - "* LIST (...) "/" name [extended]" (+ STATUS) */
static int list_send_entry(struct list_context *ctx,
			   const struct store_list_entry *e, bool childinfo)
{
	struct buffer buf;
	int ret;

	buffer_init(&buf, 0);
	buffer_printf(&buf, "* %s (", ctx->command);
	list_append_attrs(ctx, &buf, e->attrs);
	buffer_append_str(&buf, ") \"/\" ");
	imap_append_mailbox(&buf, ctx->client, e->name);
	if (childinfo)
		buffer_append_str(&buf, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
	buffer_append_str(&buf, "\r\n");
	ret = imap_client_write(ctx->client, buf.data, buf.used);
	buffer_clear(&buf);
	if (ret < 0)
		return -1;
	if ((ctx->options & RET_STATUS) != 0 &&
	    (e->attrs & STORE_LIST_NONEXISTENT) == 0) {
		/* A mailbox that vanished meanwhile just gets no STATUS. */
		if (cmd_status_send(ctx->client, e->name, ctx->status_items) == -1)
			return -1;
	}
	return 0;
}

/* list_entry_wanted - filter for LIST; *childinfo_r for RECURSIVEMATCH */
static bool list_entry_wanted(const struct list_context *ctx,
			      const struct store_list_entry *e,
			      bool *childinfo_r)
{
	*childinfo_r = false;
	if (!list_match_any(ctx, e->name))
		return false;
	if ((ctx->options & SEL_SPECIAL_USE) != 0 &&
	    (e->attrs & STORE_SPECIAL_MASK) == 0)
		return false;
	if ((ctx->options & SEL_SUBSCRIBED) != 0) {
		if ((e->attrs & STORE_LIST_SUBSCRIBED) != 0)
			return true;
		if ((ctx->options & SEL_RECURSIVEMATCH) != 0 &&
		    list_has_subscribed_child(ctx, e->name, false)) {
			*childinfo_r = true;
			return true;
		}
		return false;
	}
	/* Plain LIST: stale subscriptions are not mailboxes. */
	return (e->attrs & STORE_LIST_NONEXISTENT) == 0 ||
		(e->attrs & STORE_LIST_HAS_CHILDREN) != 0;
}

/* lsub_entry_wanted - LSUB: subscribed, or a parent of one via "%" */
static bool lsub_entry_wanted(const struct list_context *ctx,
			      struct store_list_entry *e)
{
	if (!list_match_any(ctx, e->name))
		return false;
	if ((e->attrs & STORE_LIST_SUBSCRIBED) != 0) {
		/* A stale subscription is still listed, selectable or not. */
		e->attrs &= ~STORE_LIST_NONEXISTENT;
		return true;
	}
	if (!list_has_subscribed_child(ctx, e->name, true))
		return false;
	/* RFC 3501 6.3.9: a parent that "%" stops at is shown with
	   \Noselect. */
	e->attrs = STORE_LIST_NONEXISTENT;
	return true;
}

/* ---- other users' mailboxes ---------------------------------------------- */

/* list_pattern_may_share - could the pattern match a name under the
   shared prefix? (Most LISTs are "%", "*" or a personal name: only the
   first two pay for reading the shared registry.) */
static bool list_pattern_may_share(const char *pattern)
{
	const char *prefix = IMAP_SHARED_PREFIX;
	size_t i;

	for (i = 0; pattern[i] != '\0' && prefix[i] != '\0'; i++) {
		if (pattern[i] == '*' || pattern[i] == '%')
			return true;
		if (pattern[i] != prefix[i])
			return false;
	}
	return prefix[i] == '\0';
}

/* list_entry_add - append a copy of name with attrs to the entries */
static void list_entry_add(struct list_context *ctx, char *name,
			   unsigned int attrs)
{
	ctx->entries = mem_realloc(ctx->entries, (ctx->entry_count + 1) *
				   sizeof(*ctx->entries));
	ctx->entries[ctx->entry_count].name = name;
	ctx->entries[ctx->entry_count++].attrs = attrs;
}

/* list_entry_find - the entry named name at index >= from, or NULL */
static struct store_list_entry *list_entry_find(struct list_context *ctx,
						size_t from, const char *name)
{
	for (size_t i = from; i < ctx->entry_count; i++) {
		if (strcmp(ctx->entries[i].name, name) == 0)
			return &ctx->entries[i];
	}
	return NULL;
}

/* list_shared_owner - the mailboxes of owner that the session may see,
   prefixed, appended to the entries */
static void list_shared_owner(struct list_context *ctx, const char *owner)
{
	struct imap_client *client = ctx->client;
	struct store_list_entry *entries;
	struct store_user *user;
	size_t count;

	if (store_user_open_shared(client->store_user, owner, &user) < 0)
		return;
	if (store_list(user, &entries, &count) == STORE_OK) {
		if (count > 0) {
			list_entry_add(ctx, mem_printf("%s/%s", IMAP_SHARED_PREFIX,
						       store_user_name(user)),
				       STORE_LIST_NONEXISTENT |
				       STORE_LIST_HAS_CHILDREN);
		}
		for (size_t i = 0; i < count; i++) {
			list_entry_add(ctx, mem_printf("%s/%s/%s",
						       IMAP_SHARED_PREFIX,
						       store_user_name(user),
						       entries[i].name),
				       entries[i].attrs);
		}
		store_list_free(entries, count);
	}
	store_user_close(&user);
}

/* list_shared_subscriptions - the session's own entries under the prefix
   are subscriptions to shared names (CREATE cannot make such a name):
   they mark the shared entry of that name, or stay as a stale
   subscription; anything else there is dropped */
static void list_shared_subscriptions(struct list_context *ctx,
				      size_t own_count)
{
	for (size_t i = 0; i < own_count; ) {
		struct store_list_entry *e = &ctx->entries[i], *shared;

		if (!imap_mailbox_is_shared_name(e->name)) {
			i++;
			continue;
		}
		shared = list_entry_find(ctx, own_count, e->name);
		if ((e->attrs & STORE_LIST_SUBSCRIBED) != 0 && shared != NULL)
			shared->attrs |= STORE_LIST_SUBSCRIBED;
		else if ((e->attrs & STORE_LIST_SUBSCRIBED) != 0)
			list_entry_add(ctx, mem_strdup(e->name),
				       STORE_LIST_NONEXISTENT |
				       STORE_LIST_SUBSCRIBED);
		/* Remove it from the own part, keeping the order (the
		   pointer is re-taken: list_entry_add() may have moved the
		   array). */
		e = &ctx->entries[i];
		free(e->name);
		memmove(e, e + 1, (ctx->entry_count - i - 1) * sizeof(*e));
		ctx->entry_count--;
		own_count--;
	}
}

/* list_shared - add other users' visible mailboxes (and the containers
   "Other Users", "Other Users/<owner>") after the session's own */
static void list_shared(struct list_context *ctx)
{
	size_t own_count = ctx->entry_count, owner_count;
	bool wanted = false;
	char **owners;

	for (size_t i = 0; i < ctx->pattern_count && !wanted; i++)
		wanted = list_pattern_may_share(ctx->patterns[i]);
	if (!wanted)
		return;
	/* Without the registry, only the session's own mailboxes list. */
	if (store_shared_owners(ctx->client->store_user, &owners,
				&owner_count) < 0) {
		owners = NULL;
		owner_count = 0;
	}
	for (size_t i = 0; i < owner_count; i++)
		list_shared_owner(ctx, owners[i]);
	if (owners != NULL)
		store_shared_owners_free(owners, owner_count);
	if (ctx->entry_count > own_count) {
		struct store_list_entry top;

		/* The container goes first, before the owners. */
		list_entry_add(ctx, mem_strdup(IMAP_SHARED_PREFIX),
			       STORE_LIST_NONEXISTENT | STORE_LIST_HAS_CHILDREN);
		top = ctx->entries[ctx->entry_count - 1];
		memmove(&ctx->entries[own_count + 1], &ctx->entries[own_count],
			(ctx->entry_count - 1 - own_count) * sizeof(top));
		ctx->entries[own_count] = top;
	}
	list_shared_subscriptions(ctx, own_count);
}

/* list_run - list the matching entries */
static int list_run(struct list_context *ctx, bool lsub)
{
	int ret;

	ret = store_list(ctx->client->store_user, &ctx->entries,
			 &ctx->entry_count);
	if (ret < 0)
		return ret - 100;
	list_shared(ctx);
	for (size_t i = 0; i < ctx->entry_count; i++) {
		struct store_list_entry *e = &ctx->entries[i];
		bool childinfo = false;

		if (lsub ? !lsub_entry_wanted(ctx, e) :
		    !list_entry_wanted(ctx, e, &childinfo))
			continue;
		if (list_send_entry(ctx, e, childinfo) < 0)
			return -1;
	}
	return 0;
}

/* list_context_free - everything the context owns */
static void list_context_free(struct list_context *ctx)
{
	for (size_t i = 0; i < ctx->pattern_count; i++)
		free(ctx->patterns[i]);
	free(ctx->patterns);
	if (ctx->entries != NULL)
		store_list_free(ctx->entries, ctx->entry_count);
}

/* list_command - LIST (lsub false) or LSUB */
static int list_command(struct imap_command *cmd, bool lsub)
{
	struct list_context ctx = {
		.client = cmd->client,
		.command = lsub ? "LSUB" : "LIST",
	};
	bool empty;
	int ret = 0;

	if (!list_parse(&ctx, cmd->args, &empty) ||
	    (lsub && (ctx.extended || ctx.options != 0))) {
		imap_command_bad(cmd, "Invalid %s arguments", ctx.command);
	} else if (empty) {
		ret = imap_client_untagged(cmd->client,
					   "%s (\\Noselect) \"/\" \"\"",
					   ctx.command);
		imap_command_ok(cmd, "%s completed", ctx.command);
	} else {
		ret = list_run(&ctx, lsub);
		if (ret < -1) {
			imap_command_store_error(cmd, ret + 100, false);
			ret = 0;
		} else {
			imap_command_ok(cmd, "%s completed", ctx.command);
		}
	}
	list_context_free(&ctx);
	return ret < 0 ? -1 : 0;
}

/* cmd_list - LIST, plain or extended */
int cmd_list(struct imap_command *cmd)
{
	return list_command(cmd, false);
}

/* cmd_lsub - LSUB (IMAP4rev1) */
int cmd_lsub(struct imap_command *cmd)
{
	return list_command(cmd, true);
}
