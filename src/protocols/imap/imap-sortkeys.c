/*
 * imap-sortkeys.c - the message keys SORT and THREAD share (RFC 5256):
 * the header fields they need (from the cached MIME tree when there is
 * one, else from the message's header block only), the base subject of
 * RFC 5256 section 2.1, the sent date with its zone, and the address sort
 * keys. No state of its own; declared in imap-search.h.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "maildir/store.h"
#include "protocols/mime/mime-part.h"
#include "protocols/mime/mime-decode.h"
#include "imap-client.h"
#include "imap-fetch.h"
#include "imap-search.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>

/* ---- message keys shared by SORT and THREAD (RFC 5256) --------------- */

/* Longest sort key kept per string (longer keys are cut: bounded memory,
   and two keys equal over this many bytes sort by sequence number). */
#define SORT_KEY_MAX 1024

static const char *const sort_field_names[IMAP_SEARCH_FIELD_COUNT] = {
	"date", "subject", "from", "to", "cc", "message-id", "in-reply-to",
	"references",
};

/* fields_from_tree - the envelope fields of the cached MIME tree; false
   when the tree is not cached */
static bool fields_from_tree(struct mailbox *box, uint32_t uid,
			     struct imap_search_fields *f)
{
	struct mime_part *root;
	const void *data;
	size_t size;

	if (mailbox_cache_lookup(box, uid, MAIL_CACHE_MIME_TREE, &data,
				 &size) <= 0)
		return false;
	root = mime_part_deserialize(data, size);
	if (root == NULL)
		return false;
	f->value[IMAP_SEARCH_FIELD_DATE] = root->env_date;
	f->value[IMAP_SEARCH_FIELD_SUBJECT] = root->env_subject;
	f->value[IMAP_SEARCH_FIELD_FROM] = root->env_from;
	f->value[IMAP_SEARCH_FIELD_TO] = root->env_to;
	f->value[IMAP_SEARCH_FIELD_CC] = root->env_cc;
	f->value[IMAP_SEARCH_FIELD_MESSAGE_ID] = root->env_message_id;
	f->value[IMAP_SEARCH_FIELD_IN_REPLY_TO] = root->env_in_reply_to;
	/* the values now belong to f */
	root->env_date = root->env_subject = root->env_from = NULL;
	root->env_to = root->env_cc = root->env_message_id = NULL;
	root->env_in_reply_to = NULL;
	mime_part_free(&root);
	return true;
}

/* field_store - one unfolded header line: keep it if wanted and new */
static void field_store(struct imap_search_fields *f, const char *line,
			size_t len)
{
	const char *colon = memchr(line, ':', len);
	size_t name_len, i;
	struct buffer value;

	if (colon == NULL)
		return;
	name_len = (size_t)(colon - line);
	while (name_len > 0 && (line[name_len - 1] == ' ' ||
				line[name_len - 1] == '\t'))
		name_len--;
	for (i = 0; i < IMAP_SEARCH_FIELD_COUNT; i++) {
		if (strlen(sort_field_names[i]) == name_len &&
		    strncasecmp(line, sort_field_names[i], name_len) == 0)
			break;
	}
	if (i == IMAP_SEARCH_FIELD_COUNT || f->value[i] != NULL)
		return;
	buffer_init(&value, 0);
	for (const char *p = colon + 1; p < line + len; p++) {
		if (*p != '\r' && *p != '\n')	/* unfold */
			(void)buffer_append_byte(&value, (unsigned char)*p);
	}
	f->value[i] = mem_strdup(str_trim((char *)buffer_cstr(&value)));
	buffer_clear(&value);
}

/* fields_from_header - the fields from the header block of the file */
static int fields_from_header(struct mailbox *box, uint32_t uid,
			      struct imap_search_fields *f)
{
	struct imap_message msg;
	struct buffer raw;
	const char *p, *end, *field = NULL;
	int ret;

	imap_message_init(&msg, box, uid);
	ret = imap_message_open(&msg);
	if (ret <= 0) {
		imap_message_deinit(&msg);
		return ret;
	}
	buffer_init(&raw, 0);
	imap_search_header_read(&msg, &raw);
	imap_message_deinit(&msg);
	p = buffer_cstr(&raw);
	end = p + raw.used;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (*p != ' ' && *p != '\t') {
			if (field != NULL)
				field_store(f, field, (size_t)(p - field));
			field = p;
		}
		p = nl == NULL ? end : nl + 1;
	}
	if (field != NULL)
		field_store(f, field, (size_t)(end - field));
	buffer_clear(&raw);
	return 1;
}

/* imap_search_fields_read - the sort/thread fields of one message */
int imap_search_fields_read(struct mailbox *box, uint32_t uid,
			    bool need_references, struct imap_search_fields *f)
{
	memset(f, 0, sizeof(*f));
	if (!need_references && fields_from_tree(box, uid, f))
		return 1;
	return fields_from_header(box, uid, f);
}

/* imap_search_fields_free - free the values */
void imap_search_fields_free(struct imap_search_fields *f)
{
	for (size_t i = 0; i < IMAP_SEARCH_FIELD_COUNT; i++) {
		free(f->value[i]);
		f->value[i] = NULL;
	}
}

/* key_finish - ASCII upper case (i;ascii-casemap), cut at SORT_KEY_MAX */
static char *key_finish(const char *text, size_t len)
{
	char *key;

	if (len > SORT_KEY_MAX)
		len = SORT_KEY_MAX;
	key = mem_strndup(text, len);
	for (size_t i = 0; i < len; i++) {
		if (key[i] >= 'a' && key[i] <= 'z')
			key[i] = (char)(key[i] - 'a' + 'A');
	}
	return key;
}

/* subject_normalize - decode, tabs/line ends to space, collapse runs of
   spaces (RFC 5256 2.1 step 1) */
static void subject_normalize(const char *subject, struct buffer *out)
{
	struct buffer dec;
	bool space = false;

	buffer_init(&dec, 0);
	mime_header_decode(subject, strlen(subject), &dec);
	for (size_t i = 0; i < dec.used; i++) {
		unsigned char c = dec.data[i];
		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && space)
			continue;
		space = c == ' ';
		(void)buffer_append_byte(out, c);
	}
	buffer_clear(&dec);
}

/* A window [start, end) of the subject being reduced. */
struct subject_window {
	const char *s;
	size_t start, end;
	bool reply;
};

/* subj_is_wsp - RFC 5256 WSP (after step 1 only space remains) */
static inline bool subj_is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* subj_trailers_strip - step 2: remove trailing "(fwd)" and WSP */
static void subj_trailers_strip(struct subject_window *w)
{
	for (;;) {
		if (w->end > w->start && subj_is_wsp(w->s[w->end - 1])) {
			w->end--;
		} else if (w->end - w->start >= 5 &&
			   strncasecmp(w->s + w->end - 5, "(fwd)", 5) == 0) {
			w->end -= 5;
			w->reply = true;
		} else {
			return;
		}
	}
}

/* subj_blob_len - subj-blob = "[" *BLOBCHAR "]" *WSP at pos, or 0 */
static size_t subj_blob_len(const struct subject_window *w, size_t pos)
{
	size_t p = pos + 1;

	if (pos >= w->end || w->s[pos] != '[')
		return 0;
	/* BLOBCHAR is 7-bit: a "[...]" with 8-bit text is not a blob */
	while (p < w->end && w->s[p] != ']' && w->s[p] != '[' &&
	       (unsigned char)w->s[p] < 0x80)
		p++;
	if (p >= w->end || w->s[p] != ']')
		return 0;
	p++;
	while (p < w->end && subj_is_wsp(w->s[p]))
		p++;
	return p - pos;
}

/* subj_refwd_len - subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob]
   ":" at pos, or 0 */
static size_t subj_refwd_len(const struct subject_window *w, size_t pos)
{
	size_t p = pos, left = w->end - pos;

	if (left >= 2 && strncasecmp(w->s + p, "re", 2) == 0)
		p += 2;
	else if (left >= 3 && strncasecmp(w->s + p, "fwd", 3) == 0)
		p += 3;
	else if (left >= 2 && strncasecmp(w->s + p, "fw", 2) == 0)
		p += 2;
	else
		return 0;
	while (p < w->end && subj_is_wsp(w->s[p]))
		p++;
	p += subj_blob_len(w, p);
	if (p >= w->end || w->s[p] != ':')
		return 0;
	return p + 1 - pos;
}

/* subj_leader_strip - step 3: remove every subj-leader; true if any */
static bool subj_leader_strip(struct subject_window *w)
{
	bool removed = false;

	for (;;) {
		size_t p = w->start, n, r;

		if (p < w->end && subj_is_wsp(w->s[p])) {
			w->start++;
			removed = true;
			continue;
		}
		while ((n = subj_blob_len(w, p)) > 0)
			p += n;
		r = subj_refwd_len(w, p);
		if (r == 0)
			return removed;
		w->start = p + r;
		w->reply = true;
		removed = true;
	}
}

/* subj_blob_strip - step 4: a leading subj-blob goes if text remains */
static bool subj_blob_strip(struct subject_window *w)
{
	size_t n = subj_blob_len(w, w->start);

	if (n == 0)
		return false;
	for (size_t p = w->start + n; p < w->end; p++) {
		if (!subj_is_wsp(w->s[p])) {
			w->start += n;
			return true;
		}
	}
	return false;
}

/* subj_fwd_strip - step 6: "[fwd:" ... "]" around it all; true if so */
static bool subj_fwd_strip(struct subject_window *w)
{
	if (w->end - w->start < 6 ||
	    strncasecmp(w->s + w->start, "[fwd:", 5) != 0 ||
	    w->s[w->end - 1] != ']')
		return false;
	w->start += 5;
	w->end--;
	w->reply = true;
	return true;
}

/* imap_search_base_subject - RFC 5256 2.1 */
char *imap_search_base_subject(const char *subject, bool *reply_r)
{
	struct subject_window w;
	struct buffer text;
	char *key;

	buffer_init(&text, 0);
	subject_normalize(subject == NULL ? "" : subject, &text);
	w.s = buffer_cstr(&text);
	w.start = 0;
	w.end = text.used;
	w.reply = false;
	do {
		bool leader, blob;

		subj_trailers_strip(&w);
		do {			/* steps 3 to 5 */
			leader = subj_leader_strip(&w);
			blob = subj_blob_strip(&w);
		} while (leader || blob);
	} while (subj_fwd_strip(&w));
	key = key_finish(w.s + w.start, w.end - w.start);
	buffer_clear(&text);
	if (reply_r != NULL)
		*reply_r = w.reply;
	return key;
}

/* date_skip_cfws - white space and (nested) comments */
static const char *date_skip_cfws(const char *p)
{
	int depth = 0;

	for (; *p != '\0'; p++) {
		if (*p == '(')
			depth++;
		else if (*p == ')' && depth > 0)
			depth--;
		else if (depth == 0 && *p != ' ' && *p != '\t')
			break;
	}
	return p;
}

/* date_zone - the zone offset in seconds; obsolete names (RFC 5322 4.3),
   unknown ones count as +0000 */
static int64_t date_zone(const char *p)
{
	static const struct { const char *name; int hours; } zones[] = {
		{ "UT", 0 }, { "GMT", 0 }, { "EST", -5 }, { "EDT", -4 },
		{ "CST", -6 }, { "CDT", -5 }, { "MST", -7 }, { "MDT", -6 },
		{ "PST", -8 }, { "PDT", -7 },
	};

	if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && isdigit((unsigned char)p[3]) &&
	    isdigit((unsigned char)p[4])) {
		int64_t off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 +
			((p[3] - '0') * 10 + (p[4] - '0')) * 60;
		return *p == '-' ? -off : off;
	}
	for (size_t i = 0; i < N_ELEMENTS(zones); i++) {
		size_t n = strlen(zones[i].name);
		if (strncasecmp(p, zones[i].name, n) == 0 &&
		    !isalpha((unsigned char)p[n]))
			return zones[i].hours * 3600;
	}
	return 0;
}

/* date_time_of_day - "hh:mm[:ss]" -> seconds; *p_r after it */
static bool date_time_of_day(const char **p_r, int64_t *secs_r)
{
	unsigned long h, m, s = 0;
	const char *p = *p_r;
	char *end;

	h = strtoul(p, &end, 10);
	if (end == p || *end != ':' || h > 23)
		return false;
	p = end + 1;
	m = strtoul(p, &end, 10);
	if (end == p || m > 59)
		return false;
	p = end;
	if (*p == ':') {
		s = strtoul(p + 1, &end, 10);
		if (end == p + 1 || s > 60)
			return false;
		p = end;
	}
	*secs_r = (int64_t)(h * 3600 + m * 60 + s);
	*p_r = p;
	return true;
}

/* imap_search_date_parse - RFC 5322 date-time (with obsolete forms) */
bool imap_search_date_parse(const char *value, int64_t *time_r)
{
	const char *p;
	int64_t day, secs;

	if (value == NULL || !imap_search_date_day(value, &day))
		return false;
	/* imap_search_date_day() checked the form; find the time after the
	   year: the first "digits:" sequence */
	p = value;
	while (*p != '\0' && !(isdigit((unsigned char)*p) &&
			       (p[1] == ':' || (isdigit((unsigned char)p[1]) &&
						p[2] == ':'))))
		p++;
	if (*p == '\0' || !date_time_of_day(&p, &secs))
		return false;
	*time_r = day * 86400 + secs - date_zone(date_skip_cfws(p));
	return true;
}

/* A scanner over an address field: one token at a time. */
struct addr_scan {
	const char *p;
	struct buffer word;	/* the token's text (quotes removed) */
};

/* addr_next - next token: returns the special character, 'w' for a word
   (atom, dotted atom or quoted string, in scan->word), 0 at the end */
static char addr_next(struct addr_scan *sc)
{
	buffer_reset(&sc->word);
	sc->p = date_skip_cfws(sc->p);
	if (*sc->p == '\0')
		return 0;
	if (*sc->p == '"') {
		for (sc->p++; *sc->p != '\0' && *sc->p != '"'; sc->p++) {
			if (*sc->p == '\\' && sc->p[1] != '\0')
				sc->p++;
			(void)buffer_append_byte(&sc->word,
						 (unsigned char)*sc->p);
		}
		if (*sc->p == '"')
			sc->p++;
		return 'w';
	}
	if (strchr("<>@,;:", *sc->p) != NULL)
		return *sc->p++;
	while (*sc->p != '\0' && strchr("<>@,;:\"( \t", *sc->p) == NULL)
		(void)buffer_append_byte(&sc->word, (unsigned char)*sc->p++);
	return 'w';
}

/* An address being collected. */
struct addr_parts {
	struct buffer phrase, local, domain;
};

/* addr_angle - inside "<...>": skip a route, collect local@domain */
static void addr_angle(struct addr_scan *sc, struct addr_parts *a)
{
	struct buffer *target = &a->local;
	char t;

	while ((t = addr_next(sc)) != 0 && t != '>') {
		if (t == ':') {		/* end of an obsolete route */
			buffer_reset(&a->local);
			buffer_reset(&a->domain);
			target = &a->local;
		} else if (t == '@' || t == ',') {
			target = &a->domain;
		} else if (t == 'w') {
			(void)buffer_append(target, sc->word.data,
					    sc->word.used);
		}
	}
	if (a->local.used == 0)
		buffer_reset(&a->domain);
}

/* addr_first - collect the first address of the field into a */
static void addr_first(const char *field, struct addr_parts *a)
{
	struct addr_scan sc = { field, { 0 } };
	struct buffer *spec = &a->local;
	char t;

	buffer_init(&sc.word, 0);
	while ((t = addr_next(&sc)) != 0) {
		if (t == ':') {			/* group name: forget it */
			buffer_reset(&a->phrase);
			buffer_reset(&a->local);
			spec = &a->local;
		} else if (t == '<') {
			buffer_reset(&a->local);
			addr_angle(&sc, a);
			if (a->local.used > 0)
				break;
		} else if (t == '@') {
			spec = &a->domain;
		} else if (t == ',' || t == ';') {
			if (a->local.used > 0)
				break;
			buffer_reset(&a->phrase);
		} else if (t == 'w') {
			if (a->phrase.used > 0 && spec == &a->local)
				(void)buffer_append_byte(&a->phrase, ' ');
			if (spec == &a->local)
				(void)buffer_append(&a->phrase, sc.word.data,
						    sc.word.used);
			(void)buffer_append(spec, sc.word.data, sc.word.used);
		}
	}
	if (t != '<' && a->domain.used == 0 && a->local.used > 0) {
		/* no '@' and no '<': not an address, keep text as mailbox */
		buffer_reset(&a->phrase);
	} else if (t != '<' && a->domain.used > 0) {
		buffer_reset(&a->phrase);	/* bare addr-spec: no name */
	}
	buffer_clear(&sc.word);
}

/* imap_search_address_keys - RFC 5256 / RFC 5957 address keys */
void imap_search_address_keys(const char *field, char **mailbox_r,
			      char **display_r)
{
	struct addr_parts a;
	struct buffer dec;

	buffer_init(&a.phrase, 0);
	buffer_init(&a.local, 0);
	buffer_init(&a.domain, 0);
	buffer_init(&dec, 0);
	if (field != NULL)
		addr_first(field, &a);
	*mailbox_r = key_finish(buffer_cstr(&a.local), a.local.used);
	if (a.phrase.used > 0) {
		mime_header_decode(buffer_cstr(&a.phrase), a.phrase.used,
				   &dec);
	} else if (a.local.used > 0) {
		(void)buffer_append(&dec, a.local.data, a.local.used);
		if (a.domain.used > 0) {
			(void)buffer_append_byte(&dec, '@');
			(void)buffer_append(&dec, a.domain.data,
					    a.domain.used);
		}
	}
	*display_r = key_finish(buffer_cstr(&dec), dec.used);
	buffer_clear(&dec);
	buffer_clear(&a.phrase);
	buffer_clear(&a.local);
	buffer_clear(&a.domain);
}
