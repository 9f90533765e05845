/*
 * cmd-compress.c - COMPRESS (RFC 4978): COMPRESS=DEFLATE.
 *
 * "tag COMPRESS DEFLATE" in the AUTH or SELECTED state (the command
 * table refuses it before login). The tagged OK goes out uncompressed;
 * everything after it, both ways, is raw deflate (the connection layer,
 * io/connection.h, does the work: under TLS when both are on, which is
 * the order RFC 4978 asks for). So this handler writes the OK itself and
 * only then switches the connection, like STARTTLS.
 *
 * Input the client pipelined behind the command is already compressed;
 * the session has consumed exactly the command line when the handler
 * runs, so the connection layer takes what is left in the input buffer
 * as compressed data.
 *
 * Answers: an unknown mechanism or a syntax error is BAD; a second
 * COMPRESS is "NO [COMPRESSIONACTIVE]" (RFC 4978 3). If the connection
 * cannot start compressing after the OK (zlib out of memory), the client
 * is already sending deflate data we cannot read: the session ends with
 * BYE.
 */
#include "lib/lib.h"
#include "io/connection.h"
#include "imap-client.h"
#include "imap-commands.h"

/* compress_check_args - exactly one mechanism name; 1 if DEFLATE */
static int compress_check_args(struct imap_command *cmd)
{
	const char *mechanism;

	if (!imap_arg_get_atom(&cmd->args[0], &mechanism) ||
	    !imap_arg_is_eol(&cmd->args[1])) {
		imap_command_bad(cmd, "COMPRESS takes one mechanism name");
		return 0;
	}
	if (strcasecmp(mechanism, "DEFLATE") != 0) {
		imap_command_bad(cmd, "Unknown compression mechanism");
		return 0;
	}
	return 1;
}

int cmd_compress(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;

	if (compress_check_args(cmd) == 0)
		return 0;
	if (connection_is_compressed(client->conn)) {
		imap_command_no(cmd, "[COMPRESSIONACTIVE] DEFLATE is already active");
		return 0;
	}
	/* The OK is the last uncompressed output. */
	if (imap_client_printf(client, "%s OK DEFLATE active\r\n", cmd->tag) < 0)
		return -1;
	imap_command_reply_written(cmd);
	if (connection_start_compress(client->conn) < 0) {
		/* We promised compression and cannot deliver: the client
		   will send deflate data we could not read. */
		log_id_error(client->id, "cannot start compression");
		return imap_client_bye(client, "Cannot start compression");
	}
	return 0;
}
