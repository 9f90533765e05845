/*
 * imap-util.c - IMAP syntax helpers: sequence sets, flags, strings,
 * mailbox names, dates (RFC 9051 section 9 formal syntax).
 *
 * Sequence sets are parsed into sorted, merged ranges with '*' kept as
 * UINT32_MAX; resolving them against the selected view happens in
 * imap_seqset_to_uids(), which also bounds the work by the view size
 * (a set like "1:4294967295" costs at most one pass over the view).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "maildir/name.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- sequence sets ---------------------------------------------------- */

/* seq_number - nz-number or '*'; advances *p */
static bool seq_number(const char **p, uint32_t *num_r)
{
	uint64_t n = 0;
	const char *s = *p;

	if (*s == '*') {
		*num_r = UINT32_MAX;
		*p = s + 1;
		return true;
	}
	if (*s < '1' || *s > '9')
		return false;
	while (*s >= '0' && *s <= '9') {
		n = n * 10 + (uint64_t)(*s - '0');
		if (n > UINT32_MAX)
			return false;
		s++;
	}
	*num_r = (uint32_t)n;
	*p = s;
	return true;
}

/* range_cmp - qsort order of ranges by their first number */
static int range_cmp(const void *a, const void *b)
{
	const struct imap_seq_range *ra = a, *rb = b;

	return ra->first < rb->first ? -1 : ra->first > rb->first ? 1 : 0;
}

/* seqset_normalize - sort and merge overlapping/adjacent ranges */
static void seqset_normalize(struct imap_seqset *set)
{
	size_t out = 0;

	if (set->count == 0)
		return;
	qsort(set->ranges, set->count, sizeof(*set->ranges), range_cmp);
	for (size_t i = 1; i < set->count; i++) {
		struct imap_seq_range *last = &set->ranges[out];

		if (set->ranges[i].first <= last->last ||
		    (last->last != UINT32_MAX && set->ranges[i].first == last->last + 1)) {
			if (set->ranges[i].last > last->last)
				last->last = set->ranges[i].last;
		} else {
			set->ranges[++out] = set->ranges[i];
		}
	}
	set->count = out + 1;
}

int imap_seqset_parse(const char *str, struct imap_seqset *set_r,
		      const char **error_r)
{
	size_t alloc = 4;

	memset(set_r, 0, sizeof(*set_r));
	if (strcmp(str, "$") == 0) {
		set_r->saved = true;
		return 0;
	}
	set_r->ranges = mem_calloc(alloc, sizeof(*set_r->ranges));
	for (const char *p = str;;) {
		uint32_t a, b;

		if (!seq_number(&p, &a))
			goto bad;
		b = a;
		if (*p == ':') {
			p++;
			if (!seq_number(&p, &b))
				goto bad;
		}
		if (set_r->count == alloc) {
			alloc *= 2;
			set_r->ranges = mem_realloc(set_r->ranges,
						    alloc * sizeof(*set_r->ranges));
		}
		set_r->ranges[set_r->count].first = a < b ? a : b;
		set_r->ranges[set_r->count].last = a < b ? b : a;
		set_r->count++;
		if (*p == '\0')
			break;
		if (*p++ != ',')
			goto bad;
	}
	seqset_normalize(set_r);
	return 0;
bad:
	imap_seqset_free(set_r);
	*error_r = "Invalid sequence set";
	return -1;
}

void imap_seqset_free(struct imap_seqset *set)
{
	MEM_FREE(&set->ranges);
	set->count = 0;
}

/* seqset_resolve_star - replace '*' (UINT32_MAX) by max; re-normalize */
static struct imap_seqset seqset_resolve_star(const struct imap_seqset *set,
					      uint32_t max)
{
	struct imap_seqset out = { .count = set->count };

	out.ranges = mem_calloc(set->count + 1, sizeof(*out.ranges));
	for (size_t i = 0; i < set->count; i++) {
		uint32_t a = set->ranges[i].first, b = set->ranges[i].last;

		if (a == UINT32_MAX)
			a = max;
		if (b == UINT32_MAX)
			b = max;
		out.ranges[i].first = a < b ? a : b;
		out.ranges[i].last = a < b ? b : a;
	}
	seqset_normalize(&out);
	return out;
}

/* seqset_saved_uids - "$": the saved SEARCH result still in the view */
static int seqset_saved_uids(struct imap_client *client, uint32_t **uids_r,
			     size_t *count_r)
{
	size_t n = 0;

	*uids_r = mem_calloc(client->search_saved_count + 1, sizeof(uint32_t));
	for (size_t i = 0; client->search_saved_valid &&
	     i < client->search_saved_count; i++) {
		if (client->box != NULL &&
		    mailbox_lookup_uid(client->box, client->search_saved[i], NULL) != NULL)
			(*uids_r)[n++] = client->search_saved[i];
	}
	*count_r = n;
	return 0;
}

int imap_seqset_to_uids(struct imap_client *client,
			const struct imap_seqset *set, bool uid,
			uint32_t **uids_r, size_t *count_r)
{
	uint32_t count = client->box != NULL ? mailbox_count(client->box) : 0;
	struct imap_seqset resolved;
	size_t n = 0;

	*uids_r = NULL;
	*count_r = 0;
	if (set->saved)
		return seqset_saved_uids(client, uids_r, count_r);
	if (uid) {
		uint32_t max_uid = count > 0 ?
			mailbox_record(client->box, count - 1)->uid : 0;

		resolved = seqset_resolve_star(set, max_uid);
		*uids_r = mem_calloc(count + 1, sizeof(uint32_t));
		/* one pass over the view, one over the ranges */
		for (uint32_t i = 0, r = 0; i < count && r < resolved.count; i++) {
			uint32_t u = mailbox_record(client->box, i)->uid;

			while (r < resolved.count && resolved.ranges[r].last < u)
				r++;
			if (r < resolved.count && u >= resolved.ranges[r].first)
				(*uids_r)[n++] = u;
		}
	} else {
		resolved = seqset_resolve_star(set, count);
		for (size_t r = 0; r < resolved.count; r++) {
			if (resolved.ranges[r].first == 0 ||
			    resolved.ranges[r].last > count) {
				imap_seqset_free(&resolved);
				return -1;
			}
		}
		*uids_r = mem_calloc(count + 1, sizeof(uint32_t));
		for (size_t r = 0; r < resolved.count; r++) {
			for (uint32_t s = resolved.ranges[r].first;
			     s <= resolved.ranges[r].last; s++)
				(*uids_r)[n++] = mailbox_record(client->box, s - 1)->uid;
		}
	}
	imap_seqset_free(&resolved);
	*count_r = n;
	return 0;
}

void imap_seqset_append_range(struct buffer *out, uint32_t a, uint32_t b)
{
	if (out->used > 0)
		(void)buffer_append_byte(out, ',');
	if (a == b)
		(void)buffer_printf(out, "%u", a);
	else
		(void)buffer_printf(out, "%u:%u", a, b);
}

void imap_seqset_write_uids(struct buffer *out, const uint32_t *uids,
			    size_t count)
{
	for (size_t i = 0; i < count;) {
		size_t j = i;

		while (j + 1 < count && uids[j + 1] == uids[j] + 1)
			j++;
		if (i > 0)
			(void)buffer_append_byte(out, ',');
		if (j == i)
			(void)buffer_printf(out, "%u", uids[i]);
		else
			(void)buffer_printf(out, "%u:%u", uids[i], uids[j]);
		i = j + 1;
	}
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t num)
{
	size_t lo = 0, hi = set->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (num < set->ranges[mid].first)
			hi = mid;
		else if (num > set->ranges[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

void imap_seqset_append_missing(struct buffer *out, struct mailbox *box,
				uint32_t first, uint32_t last)
{
	uint32_t count = mailbox_count(box), lo = 0, hi = count, next = first;

	while (lo < hi) {	/* the first record at or above first */
		uint32_t mid = lo + (hi - lo) / 2;

		if (mailbox_record(box, mid)->uid < first)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < count && next <= last; lo++) {
		uint32_t uid = mailbox_record(box, lo)->uid;

		if (uid > last)
			break;
		if (uid > next)
			imap_seqset_append_range(out, next, uid - 1);
		next = uid + 1;
	}
	if (next <= last && next != 0)
		imap_seqset_append_range(out, next, last);
}

/* ---- flags ------------------------------------------------------------ */

static const struct {
	const char *name;
	uint32_t flag;
} imap_system_flags[] = {
	{ "\\Seen", MAIL_SEEN },
	{ "\\Answered", MAIL_ANSWERED },
	{ "\\Flagged", MAIL_FLAGGED },
	{ "\\Deleted", MAIL_DELETED },
	{ "\\Draft", MAIL_DRAFT },
};

/* is_atom_char - ATOM-CHAR (RFC 9051): no specials, no CTL, no 8-bit */
static bool is_atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){ %*\"\\]", c) == NULL;
}

/* is_atom - a non-empty string of ATOM-CHARs */
static bool is_atom(const char *str)
{
	if (*str == '\0')
		return false;
	for (; *str != '\0'; str++) {
		if (!is_atom_char((unsigned char)*str))
			return false;
	}
	return true;
}

/* flag_parse_one - one flag atom into the outputs */
static int flag_parse_one(const char *name, uint32_t *flags,
			  const char **keywords, size_t *kw_count,
			  const char **error_r)
{
	if (name[0] == '\\') {
		for (size_t i = 0; i < N_ELEMENTS(imap_system_flags); i++) {
			if (strcasecmp(name, imap_system_flags[i].name) == 0) {
				*flags |= imap_system_flags[i].flag;
				return 0;
			}
		}
		*error_r = strcasecmp(name, "\\Recent") == 0 ?
			"\\Recent cannot be changed" : "Invalid system flag";
		return -1;
	}
	if (!is_atom(name)) {
		*error_r = "Invalid keyword";
		return -1;
	}
	for (size_t i = 0; i < *kw_count; i++) {
		if (strcasecmp(keywords[i], name) == 0)
			return 0;
	}
	keywords[(*kw_count)++] = name;
	return 0;
}

int imap_flags_parse(const struct imap_arg *arg, uint32_t *flags_r,
		     const char ***keywords_r, size_t *keyword_count_r,
		     const char **error_r)
{
	const struct imap_arg *list = arg;
	size_t count = 1, kw_count = 0;
	const char **keywords;
	const char *name;

	*flags_r = 0;
	*keywords_r = NULL;
	*keyword_count_r = 0;
	if (arg->type == IMAP_ARG_LIST)
		imap_arg_get_list(arg, &list, &count);
	keywords = mem_calloc(count + 1, sizeof(*keywords));
	for (size_t i = 0; i < count; i++) {
		if (!imap_arg_get_atom(&list[i], &name) ||
		    flag_parse_one(name, flags_r, keywords, &kw_count, error_r) < 0) {
			if (list[i].type != IMAP_ARG_ATOM)
				*error_r = "Flags must be atoms";
			free(keywords);
			return -1;
		}
	}
	*keywords_r = keywords;
	*keyword_count_r = kw_count;
	return 0;
}

uint32_t imap_client_visible_flags(const struct imap_client *client,
				   uint32_t flags)
{
	if ((client->enabled & IMAP_ENABLED_REV2) != 0)
		flags &= ~(uint32_t)MAIL_RECENT;
	return flags;
}

bool imap_status_items_allowed(const struct imap_client *client,
			       unsigned int items)
{
	return (client->enabled & IMAP_ENABLED_REV2) == 0 ||
		(items & STATUS_RECENT) == 0;
}

void imap_flags_write(struct buffer *out, struct mailbox *box, uint32_t flags,
		      uint64_t keywords)
{
	size_t start = out->used;

	for (size_t i = 0; i < N_ELEMENTS(imap_system_flags); i++) {
		if ((flags & imap_system_flags[i].flag) == 0)
			continue;
		if (out->used > start)
			(void)buffer_append_byte(out, ' ');
		(void)buffer_append_str(out, imap_system_flags[i].name);
	}
	if ((flags & MAIL_RECENT) != 0) {
		if (out->used > start)
			(void)buffer_append_byte(out, ' ');
		(void)buffer_append_str(out, "\\Recent");
	}
	for (unsigned int i = 0; i < 64 && keywords != 0; i++) {
		const char *name;

		if ((keywords & ((uint64_t)1 << i)) == 0)
			continue;
		keywords &= ~((uint64_t)1 << i);
		if (box == NULL || i >= mailbox_keyword_count(box) ||
		    (name = mailbox_keyword_name(box, i)) == NULL)
			continue;
		if (out->used > start)
			(void)buffer_append_byte(out, ' ');
		(void)buffer_append_str(out, name);
	}
}

/* ---- strings ------------------------------------------------------------- */

/* utf8_valid - is str[0..len) valid UTF-8 (no overlongs, no surrogates)? */
static bool utf8_valid(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + n >= len)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/* string_quotable - can str be sent as a quoted string? */
static bool string_quotable(const char *str, size_t len, bool utf8)
{
	bool eight_bit = false;

	if (len > 1024)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)str[i];

		if (c == '\0' || c == '\r' || c == '\n')
			return false;
		if (c >= 0x80)
			eight_bit = true;
		else if (c < 0x20 || c == 0x7f)
			return false;
	}
	return !eight_bit || (utf8 && utf8_valid((const unsigned char *)str, len));
}

void imap_append_string(struct buffer *out, const char *str, size_t len,
			bool utf8)
{
	if (!string_quotable(str, len, utf8)) {
		(void)buffer_printf(out, "{%zu}\r\n", len);
		(void)buffer_append(out, str, len);
		return;
	}
	(void)buffer_append_byte(out, '"');
	for (size_t i = 0; i < len; i++) {
		if (str[i] == '"' || str[i] == '\\')
			(void)buffer_append_byte(out, '\\');
		(void)buffer_append_byte(out, (unsigned char)str[i]);
	}
	(void)buffer_append_byte(out, '"');
}

void imap_append_nstring(struct buffer *out, const char *str, bool utf8)
{
	if (str == NULL)
		(void)buffer_append_str(out, "NIL");
	else
		imap_append_string(out, str, strlen(str), utf8);
}

void imap_append_astring(struct buffer *out, const char *str, bool utf8)
{
	/* "NIL" as an atom would read back as NIL: quote it */
	if (is_atom(str) && strcasecmp(str, "NIL") != 0)
		(void)buffer_append_str(out, str);
	else
		imap_append_string(out, str, strlen(str), utf8);
}

/* client_utf8 - does the client take UTF-8 mailbox names? */
static bool client_utf8(const struct imap_client *client)
{
	return (client->enabled & (IMAP_ENABLED_UTF8 | IMAP_ENABLED_REV2)) != 0;
}

void imap_append_mailbox(struct buffer *out, const struct imap_client *client,
			 const char *name)
{
	char *mutf7;

	if (client_utf8(client) || name_utf8_to_mutf7(name, &mutf7) != NAME_OK) {
		imap_append_string(out, name, strlen(name), true);
		return;
	}
	imap_append_string(out, mutf7, strlen(mutf7), false);
	free(mutf7);
}

char *imap_mailbox_from_client(const struct imap_client *client,
			       const char *name, const char **error_r)
{
	char *utf8;

	if (strcasecmp(name, "INBOX") == 0)
		return mem_strdup("INBOX");
	if (client_utf8(client)) {
		if (!utf8_valid((const unsigned char *)name, strlen(name))) {
			*error_r = "Mailbox name is not valid UTF-8";
			return NULL;
		}
		return mem_strdup(name);
	}
	for (const char *p = name; *p != '\0'; p++) {
		if ((unsigned char)*p >= 0x80) {
			*error_r = "8-bit mailbox names need ENABLE UTF8=ACCEPT";
			return NULL;
		}
	}
	if (name_mutf7_to_utf8(name, &utf8) != NAME_OK) {
		*error_r = "Invalid modified UTF-7 in mailbox name";
		return NULL;
	}
	if (strncasecmp(utf8, "INBOX/", 6) == 0)
		memcpy(utf8, "INBOX", 5);
	return utf8;
}

/* ---- shared mailboxes ------------------------------------------------------ */

bool imap_mailbox_is_shared_name(const char *name)
{
	size_t len = strlen(IMAP_SHARED_PREFIX);

	return strncmp(name, IMAP_SHARED_PREFIX, len) == 0 &&
		(name[len] == '\0' || name[len] == '/');
}

/* shared_split - "Other Users/<owner>/<rest>" -> owner and rest; false
   for the containers and for anything else */
static bool shared_split(const char *name, char **owner_r, const char **rest_r)
{
	size_t len = strlen(IMAP_SHARED_PREFIX);
	const char *owner, *slash;

	if (strncmp(name, IMAP_SHARED_PREFIX, len) != 0 || name[len] != '/')
		return false;
	owner = name + len + 1;
	slash = strchr(owner, '/');
	if (slash == NULL || slash == owner || slash[1] == '\0')
		return false;
	*owner_r = mem_strndup(owner, (size_t)(slash - owner));
	*rest_r = slash + 1;
	return true;
}

int imap_mailbox_ref_get(struct imap_client *client, const char *name,
			 struct imap_mailbox_ref *ref_r)
{
	struct store_user *owner_user;
	const char *rest;
	char *owner;
	int ret;

	memset(ref_r, 0, sizeof(*ref_r));
	if (!imap_mailbox_is_shared_name(name)) {
		ref_r->user = client->store_user;
		ref_r->name = mem_strdup(name);
		return STORE_OK;
	}
	if (!shared_split(name, &owner, &rest)) {
		/* Opening a user that does not exist sets the same text. */
		return store_user_open_shared(client->store_user, "",
					      &owner_user);
	}
	ret = store_user_open_shared(client->store_user, owner, &owner_user);
	free(owner);
	if (ret < 0)
		return ret;
	ref_r->user = owner_user;
	ref_r->name = mem_strdup(rest);
	ref_r->shared = true;
	return STORE_OK;
}

void imap_mailbox_ref_free(struct imap_mailbox_ref *ref)
{
	if (ref->shared && ref->user != NULL)
		store_user_close(&ref->user);
	ref->user = NULL;
	MEM_FREE(&ref->name);
}

char *imap_mailbox_client_name(const struct imap_client *client,
			       const struct mailbox *box)
{
	const struct store_user *owner = mailbox_user(box);

	if (owner == client->store_user)
		return mem_strdup(mailbox_name(box));
	return mem_printf("%s/%s/%s", IMAP_SHARED_PREFIX,
			  store_user_name(owner), mailbox_name(box));
}

bool imap_mailbox_is_selected(const struct imap_client *client,
			      const char *name)
{
	char *selected, *canonical = NULL;
	const char *rest;
	bool same;

	if (client->box == NULL)
		return false;
	selected = imap_mailbox_client_name(client, client->box);
	if (imap_mailbox_is_shared_name(name)) {
		char *owner, *full;

		/* The owner compares in lower case (store_user_name() is
		   canonical), the rest in the store's canonical form. */
		same = false;
		if (shared_split(name, &owner, &rest)) {
			if (store_name_normalize(rest, &canonical) == STORE_OK) {
				full = mem_printf("%s/%s/%s", IMAP_SHARED_PREFIX,
						  str_lcase(owner), canonical);
				same = strcmp(full, selected) == 0;
				free(full);
			}
			free(owner);
		}
	} else {
		same = store_name_normalize(name, &canonical) == STORE_OK &&
			strcmp(canonical, selected) == 0;
	}
	free(canonical);
	free(selected);
	return same;
}

/* ---- dates ---------------------------------------------------------------- */

static const char *const imap_months[] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

/* date_digits - exactly n digits (n_min..n_max) at *p */
static bool date_digits(const char **p, unsigned int n_min, unsigned int n_max,
			int *value_r)
{
	unsigned int n = 0;
	int v = 0;

	while (n < n_max && **p >= '0' && **p <= '9') {
		v = v * 10 + (**p - '0');
		(*p)++;
		n++;
	}
	*value_r = v;
	return n >= n_min;
}

/* date_ymd - "d-Mon-yyyy" at *p */
static bool date_ymd(const char **p, struct tm *tm)
{
	int day, year;
	unsigned int m;

	if (!date_digits(p, 1, 2, &day) || **p != '-')
		return false;
	(*p)++;
	for (m = 0; m < 12; m++) {
		if (strncasecmp(*p, imap_months[m], 3) == 0)
			break;
	}
	if (m == 12 || (*p)[3] != '-')
		return false;
	*p += 4;
	if (!date_digits(p, 4, 4, &year))
		return false;
	memset(tm, 0, sizeof(*tm));
	tm->tm_mday = day;
	tm->tm_mon = (int)m;
	tm->tm_year = year - 1900;
	/* reject 31-Feb and friends: timegm normalises them */
	{
		struct tm check = *tm;
		time_t t = timegm(&check);

		if (t == (time_t)-1 || check.tm_mday != day || check.tm_mon != (int)m)
			return false;
	}
	return day >= 1 && day <= 31 && year >= 1000;
}

bool imap_date_parse(const char *str, int64_t *time_r)
{
	struct tm tm;

	if (!date_ymd(&str, &tm) || *str != '\0')
		return false;
	*time_r = (int64_t)timegm(&tm);
	return true;
}

bool imap_date_time_parse(const char *str, int64_t *time_r)
{
	int hour, min, sec, zone;
	const char *p = str;
	struct tm tm;
	int sign;

	if (*p == ' ')
		p++;	/* date-day-fixed: " 1-Feb-1994" */
	if (!date_ymd(&p, &tm) || *p++ != ' ' ||
	    !date_digits(&p, 2, 2, &hour) || *p++ != ':' ||
	    !date_digits(&p, 2, 2, &min) || *p++ != ':' ||
	    !date_digits(&p, 2, 2, &sec) || *p++ != ' ')
		return false;
	if (*p != '+' && *p != '-')
		return false;
	sign = *p++ == '-' ? -1 : 1;
	if (!date_digits(&p, 4, 4, &zone) || *p != '\0')
		return false;
	if (hour > 23 || min > 59 || sec > 60 || zone % 100 > 59)
		return false;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	*time_r = (int64_t)timegm(&tm) -
		sign * ((zone / 100) * 3600 + (zone % 100) * 60);
	return true;
}

void imap_date_time_write(struct buffer *out, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	long off;

	if (localtime_r(&tt, &tm) == NULL) {
		tt = 0;
		(void)gmtime_r(&tt, &tm);
	}
	off = tm.tm_gmtoff / 60;
	(void)buffer_printf(out, "\"%2d-%s-%04d %02d:%02d:%02d %c%02ld%02ld\"",
			    tm.tm_mday, imap_months[tm.tm_mon], tm.tm_year + 1900,
			    tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+',
			    labs(off) / 60, labs(off) % 60);
}
