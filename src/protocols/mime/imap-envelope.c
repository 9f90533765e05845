/*
 * imap-envelope.c - ENVELOPE (RFC 9051 7.5.2) and the RFC 5322 address
 * parser behind it.
 *
 *   (date subject from sender reply-to to cc bcc in-reply-to message-id)
 *
 * Each address is (name adl mailbox host). Groups are written as RFC 9051
 * says: (NIL NIL "group" NIL) before the members, (NIL NIL NIL NIL) after.
 *
 * The parser is tolerant, because the header of a message is whatever the
 * sender wrote:
 * - display names are kept raw (RFC 2047 words stay encoded, as RFC 9051
 *   requires); quoted strings are unquoted, words are joined by one space,
 *   comments are dropped;
 * - obsolete route addresses "<@a,@b:user@host>" give adl "@a,@b";
 * - an address without '@' gets the empty string "" as host, never NIL:
 *   a NIL host with a mailbox would be read by clients as the start of a
 *   group (RFC 9051 7.5.2);
 * - text that is not an address at all ("From: Hello World") is not
 *   dropped: it becomes the mailbox, words joined by one space, host "";
 * - a group missing its ';' is closed at the end of the field.
 * Sender and Reply-To default to From when absent or empty; other absent
 * fields are NIL, and an empty address list is NIL.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "mime-part.h"
#include "mime-private.h"
#include "imap-bodystructure.h"

#include <ctype.h>

enum token_type {
	TOKEN_END,
	TOKEN_WORD,		/* atom or quoted string */
	TOKEN_SPECIAL,		/* one of ()<>[]:;@\,. */
};

struct token {
	enum token_type type;
	char special;
	bool space_before;	/* white space or a comment before it */
	struct buffer text;	/* the word, unquoted */
};

struct scanner {
	const char *p;
};

/* is_address_special - RFC 5322 specials that split atoms */
static bool is_address_special(char c)
{
	return c != '\0' && strchr("()<>[]:;@\\,.\"", c) != NULL;
}

/* skip_space - skip white space and comments; true when any skipped */
static bool skip_space(struct scanner *sc)
{
	const char *start = sc->p;
	unsigned int level = 0;

	for (; *sc->p != '\0'; sc->p++) {
		if (level > 0 && *sc->p == '\\' && sc->p[1] != '\0')
			sc->p++;
		else if (*sc->p == '(')
			level++;
		else if (*sc->p == ')' && level > 0)
			level--;
		else if (level == 0 && !isspace((unsigned char)*sc->p))
			break;
	}
	return sc->p != start;
}

/* scan_quoted - a quoted string into tok->text */
static void scan_quoted(struct scanner *sc, struct token *tok)
{
	sc->p++;
	for (; *sc->p != '\0' && *sc->p != '"'; sc->p++) {
		if (*sc->p == '\\' && sc->p[1] != '\0')
			sc->p++;
		buffer_append_byte(&tok->text, (unsigned char)*sc->p);
	}
	if (*sc->p == '"')
		sc->p++;
}

/* scan_token - the next token */
static void scan_token(struct scanner *sc, struct token *tok)
{
	buffer_reset(&tok->text);
	tok->space_before = skip_space(sc);
	tok->special = '\0';
	if (*sc->p == '\0') {
		tok->type = TOKEN_END;
	} else if (*sc->p == '"') {
		tok->type = TOKEN_WORD;
		scan_quoted(sc, tok);
	} else if (is_address_special(*sc->p)) {
		tok->type = TOKEN_SPECIAL;
		tok->special = *sc->p++;
	} else {
		tok->type = TOKEN_WORD;
		while (*sc->p != '\0' && !is_address_special(*sc->p) &&
		       !isspace((unsigned char)*sc->p))
			buffer_append_byte(&tok->text,
					   (unsigned char)*sc->p++);
	}
}

struct address {
	struct buffer name, route, local, domain;
	bool has_at, has_angle;
};

/* address_reset - empty all parts */
static void address_reset(struct address *addr)
{
	buffer_reset(&addr->name);
	buffer_reset(&addr->route);
	buffer_reset(&addr->local);
	buffer_reset(&addr->domain);
	addr->has_at = addr->has_angle = false;
}

/* token_append - append a token's text (special or word) */
static void token_append(struct buffer *buf, const struct token *tok)
{
	if (tok->type == TOKEN_SPECIAL)
		buffer_append_byte(buf, (unsigned char)tok->special);
	else
		buffer_append(buf, tok->text.data, tok->text.used);
}

/* phrase_append - display name: words joined by one space */
static void phrase_append(struct buffer *phrase, const struct token *tok)
{
	if (tok->space_before && phrase->used > 0)
		buffer_append_byte(phrase, ' ');
	token_append(phrase, tok);
}

/* spec_append - addr-spec outside <>: local@domain, spaces dropped */
static void spec_append(struct address *addr, const struct token *tok)
{
	if (tok->type == TOKEN_SPECIAL && tok->special == '@' &&
	    !addr->has_at) {
		addr->has_at = true;
		return;
	}
	token_append(addr->has_at ? &addr->domain : &addr->local, tok);
}

/* parse_angle - inside <...>: optional route, local@domain */
static void parse_angle(struct scanner *sc, struct token *tok,
			struct address *addr)
{
	bool in_route = false;

	addr->has_angle = true;
	buffer_reset(&addr->local);
	buffer_reset(&addr->domain);
	addr->has_at = false;
	for (scan_token(sc, tok); tok->type != TOKEN_END; scan_token(sc, tok)) {
		if (tok->type == TOKEN_SPECIAL && tok->special == '>')
			return;
		if (addr->local.used == 0 && !addr->has_at &&
		    tok->type == TOKEN_SPECIAL && tok->special == '@')
			in_route = true;
		if (in_route) {
			if (tok->type == TOKEN_SPECIAL && tok->special == ':')
				in_route = false;
			else
				token_append(&addr->route, tok);
			continue;
		}
		spec_append(addr, tok);
	}
}

/* write_address - one (name adl mailbox host) */
static void write_address(struct buffer *out, const struct address *addr,
			  bool utf8)
{
	const struct buffer *mailbox = &addr->local;

	if (!addr->has_angle && !addr->has_at)
		mailbox = &addr->name;	/* not an address: keep the text */
	buffer_append_byte(out, '(');
	imap_write_nstring_len(out, (addr->has_angle && addr->name.used > 0) ?
			       buffer_cstr(&addr->name) : NULL,
			       addr->name.used, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring_len(out, addr->route.used > 0 ?
			       buffer_cstr(&addr->route) : NULL,
			       addr->route.used, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring_len(out, buffer_cstr(mailbox), mailbox->used, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring_len(out, buffer_cstr(&addr->domain),
			       addr->domain.used, utf8);
	buffer_append_byte(out, ')');
}

/* address_is_empty - nothing collected */
static bool address_is_empty(const struct address *addr)
{
	return !addr->has_angle && !addr->has_at && addr->name.used == 0 &&
		addr->local.used == 0;
}

struct list_state {
	struct buffer *out;
	bool utf8, in_group, any;
};

/* list_emit - write a collected address (if any), reset it */
static void list_emit(struct list_state *ls, struct address *addr)
{
	if (!address_is_empty(addr)) {
		if (!ls->any)
			buffer_append_byte(ls->out, '(');
		ls->any = true;
		write_address(ls->out, addr, ls->utf8);
	}
	address_reset(addr);
}

/* list_raw - write a raw marker such as a group start/end */
static void list_raw(struct list_state *ls, const char *name, size_t len)
{
	if (!ls->any)
		buffer_append_byte(ls->out, '(');
	ls->any = true;
	if (name == NULL) {
		buffer_append_str(ls->out, "(NIL NIL NIL NIL)");
		return;
	}
	buffer_append_str(ls->out, "(NIL NIL ");
	imap_write_nstring_len(ls->out, name, len, ls->utf8);
	buffer_append_str(ls->out, " NIL)");
}

/* list_special - handle a special token at address level; false when it
   is part of the address text */
static bool list_special(struct list_state *ls, struct scanner *sc,
			 struct token *tok, struct address *addr)
{
	switch (tok->special) {
	case ',':
		list_emit(ls, addr);
		return true;
	case '<':
		parse_angle(sc, tok, addr);
		return true;
	case ':':
		if (ls->in_group || addr->has_at || addr->has_angle)
			return false;
		list_raw(ls, buffer_cstr(&addr->name), addr->name.used);
		address_reset(addr);
		ls->in_group = true;
		return true;
	case ';':
		list_emit(ls, addr);
		if (ls->in_group)
			list_raw(ls, NULL, 0);
		ls->in_group = false;
		return true;
	default:
		return false;
	}
}

/* write_address_list - an address field as a list, NIL when empty */
static void write_address_list(struct buffer *out, const char *value,
			       bool utf8)
{
	struct list_state ls = { .out = out, .utf8 = utf8 };
	struct scanner sc = { .p = value != NULL ? value : "" };
	struct address addr;
	struct token tok;

	buffer_init(&tok.text, 0);
	buffer_init(&addr.name, 0);
	buffer_init(&addr.route, 0);
	buffer_init(&addr.local, 0);
	buffer_init(&addr.domain, 0);
	address_reset(&addr);
	for (scan_token(&sc, &tok); tok.type != TOKEN_END;
	     scan_token(&sc, &tok)) {
		if (tok.type == TOKEN_SPECIAL &&
		    list_special(&ls, &sc, &tok, &addr))
			continue;
		if (addr.has_angle)
			continue;	/* junk after <...> */
		phrase_append(&addr.name, &tok);
		spec_append(&addr, &tok);
	}
	list_emit(&ls, &addr);
	if (ls.in_group)
		list_raw(&ls, NULL, 0);
	buffer_append_str(out, ls.any ? ")" : "NIL");
	buffer_clear(&tok.text);
	buffer_clear(&addr.name);
	buffer_clear(&addr.route);
	buffer_clear(&addr.local);
	buffer_clear(&addr.domain);
}

/* has_addresses - is the field present and not only white space? */
static bool has_addresses(const char *value)
{
	if (value == NULL)
		return false;
	for (; *value != '\0'; value++) {
		if (!isspace((unsigned char)*value))
			return true;
	}
	return false;
}

/* imap_envelope_write - the ENVELOPE of a message part */
void imap_envelope_write(const struct mime_part *part, bool utf8,
			 struct buffer *out)
{
	const char *from = part->env_from;

	buffer_append_byte(out, '(');
	imap_write_nstring(out, part->env_date, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->env_subject, utf8);
	buffer_append_byte(out, ' ');
	write_address_list(out, from, utf8);
	buffer_append_byte(out, ' ');
	write_address_list(out, has_addresses(part->env_sender) ?
			   part->env_sender : from, utf8);
	buffer_append_byte(out, ' ');
	write_address_list(out, has_addresses(part->env_reply_to) ?
			   part->env_reply_to : from, utf8);
	buffer_append_byte(out, ' ');
	write_address_list(out, part->env_to, utf8);
	buffer_append_byte(out, ' ');
	write_address_list(out, part->env_cc, utf8);
	buffer_append_byte(out, ' ');
	write_address_list(out, part->env_bcc, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->env_in_reply_to, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->env_message_id, utf8);
	buffer_append_byte(out, ')');
}
