/*
 * cmd-cluster.c - `clustermailctl cluster status`: the cluster as this
 * node sees it, one line per node.
 *
 * Two sources, each optional:
 *   - the local daemon's view of the corosync CPG group (control command
 *     "cluster"): which clustermail daemons are members, and the figures
 *     each one announces (sessions, queue work, lock waits);
 *   - Pacemaker, when it runs here: `crm_mon --one-shot --inactive
 *     --output-as=xml` for node and resource state, and `cibadmin --query
 *     --scope resources` for the addresses of the IPaddr2 resources
 *     (crm_mon does not show parameters), both read with libxml2.
 * Rows are merged by node name (clustermail's node_name should be the
 * corosync/pacemaker node name; the OCF agent passes `crm_node -n`).
 *
 * Exit 0 when at least one source answered, 69 when neither did.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "ctl.h"
#include "control-client.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#define CLUSTER_TIMEOUT_MSECS 10000
#define CLUSTER_MAX_NODES 64
#define CLUSTER_OUTPUT_MAX (16 * 1024 * 1024)

struct cluster_row {
	char name[64];
	/* CPG (from the local daemon) */
	bool member;
	bool self;
	uint64_t nodeid, pid, connections, queue_active, queue_queued;
	uint64_t lock_waits, lock_timeouts;
	bool draining, has_state;
	/* Pacemaker */
	bool pcmk_known;
	bool online, standby;
	char clustermail[16];		/* started, stopped, failed, "" */
	char vips[256];			/* "10.0.0.1 10.0.0.2" */
};

struct cluster_view {
	struct cluster_row rows[CLUSTER_MAX_NODES];
	unsigned int count;
	/* CPG */
	bool cpg_answered;
	char cpg_error[256];
	char mode[16], group[128], last_error[160];
	bool joined;
	uint64_t members;
	/* Pacemaker */
	bool pcmk_answered;
	char pcmk_error[256];
	char dc[64];
	bool quorate;
};

/* cluster_row_get - the row of node name (created when new) */
static struct cluster_row *cluster_row_get(struct cluster_view *v, const char *name)
{
	for (unsigned int i = 0; i < v->count; i++) {
		if (strcmp(v->rows[i].name, name) == 0)
			return &v->rows[i];
	}
	if (v->count == CLUSTER_MAX_NODES)
		return NULL;
	snprintf(v->rows[v->count].name, sizeof(v->rows[0].name), "%s", name);
	return &v->rows[v->count++];
}

/* ---- the daemon's CPG view ---------------------------------------------- */

struct cpg_parse {
	struct cluster_view *view;
	/* members.N.*: fields until we know N's name */
	struct cluster_row pending[CLUSTER_MAX_NODES];
	unsigned int pending_count;
};

static uint64_t cluster_u64(const char *s)
{
	return strtoull(s, NULL, 10);
}

static void cluster_cpg_visit(const char *path, enum json_type type ATTR_UNUSED,
			      const char *value, void *context)
{
	struct cpg_parse *p = context;
	struct cluster_view *v = p->view;
	unsigned int index;
	int used = 0;
	struct cluster_row *r;
	const char *field;

	if (strcmp(path, "error") == 0)
		snprintf(v->cpg_error, sizeof(v->cpg_error), "%s", value);
	else if (strcmp(path, "mode") == 0)
		snprintf(v->mode, sizeof(v->mode), "%s", value);
	else if (strcmp(path, "group") == 0)
		snprintf(v->group, sizeof(v->group), "%s", value);
	else if (strcmp(path, "last_error") == 0)
		snprintf(v->last_error, sizeof(v->last_error), "%s", value);
	else if (strcmp(path, "joined") == 0)
		v->joined = strcmp(value, "true") == 0;
	if (sscanf(path, "members.%u.%n", &index, &used) != 1 || used == 0 ||
	    index >= CLUSTER_MAX_NODES)
		return;
	if (index >= p->pending_count)
		p->pending_count = index + 1;
	r = &p->pending[index];
	r->member = true;
	field = path + used;
	if (strcmp(field, "name") == 0)
		snprintf(r->name, sizeof(r->name), "%s", value);
	else if (strcmp(field, "self") == 0)
		r->self = strcmp(value, "true") == 0;
	else if (strcmp(field, "nodeid") == 0)
		r->nodeid = cluster_u64(value);
	else if (strcmp(field, "pid") == 0)
		r->pid = cluster_u64(value);
	else if (strcmp(field, "state_at") == 0)
		r->has_state = cluster_u64(value) != 0;
	else if (strcmp(field, "connections") == 0)
		r->connections = cluster_u64(value);
	else if (strcmp(field, "queue_active") == 0)
		r->queue_active = cluster_u64(value);
	else if (strcmp(field, "queue_queued") == 0)
		r->queue_queued = cluster_u64(value);
	else if (strcmp(field, "lock_waits") == 0)
		r->lock_waits = cluster_u64(value);
	else if (strcmp(field, "lock_timeouts") == 0)
		r->lock_timeouts = cluster_u64(value);
	else if (strcmp(field, "draining") == 0)
		r->draining = strcmp(value, "true") == 0;
}

static void cluster_read_cpg(struct ctl *ctl, struct cluster_view *v)
{
	struct cpg_parse p = { .view = v };
	char *reply, *error;
	const char *parse_error;

	if (control_client_request(ctl->set->control_socket, "cluster",
				   CLUSTER_TIMEOUT_MSECS, &reply, &error) != CTL_EXIT_OK) {
		snprintf(v->cpg_error, sizeof(v->cpg_error), "%s", error);
		free(error);
		return;
	}
	if (json_parse(reply, cluster_cpg_visit, &p, &parse_error) < 0) {
		snprintf(v->cpg_error, sizeof(v->cpg_error),
			 "malformed reply from the daemon: %s", parse_error);
		free(reply);
		return;
	}
	free(reply);
	if (v->cpg_error[0] != '\0')
		return;
	v->cpg_answered = true;
	v->members = p.pending_count;
	for (unsigned int i = 0; i < p.pending_count; i++) {
		struct cluster_row *src = &p.pending[i], *r;
		char name[64];

		if (src->name[0] == '\0')
			snprintf(name, sizeof(name), "?node%llu/pid%llu",
				 (unsigned long long)src->nodeid,
				 (unsigned long long)src->pid);
		else
			snprintf(name, sizeof(name), "%s", src->name);
		if ((r = cluster_row_get(v, name)) == NULL)
			continue;
		*r = *src;
		snprintf(r->name, sizeof(r->name), "%s", name);
	}
}

/* ---- Pacemaker ------------------------------------------------------------ */

/* cluster_run - stdout of a shell command; NULL with *status_r when it
   could not run or failed */
static char *cluster_run(const char *command, int *status_r)
{
	struct buffer out;
	char chunk[4096];
	size_t n;
	FILE *f = popen(command, "r");

	*status_r = -1;
	if (f == NULL)
		return NULL;
	buffer_init(&out, 0);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (out.used + n > CLUSTER_OUTPUT_MAX)
			break;
		buffer_append(&out, chunk, n);
	}
	*status_r = pclose(f);
	if (*status_r == -1 || !WIFEXITED(*status_r) || WEXITSTATUS(*status_r) != 0) {
		*status_r = *status_r == -1 || !WIFEXITED(*status_r) ? -1 :
			WEXITSTATUS(*status_r);
		buffer_clear(&out);
		return NULL;
	}
	*status_r = 0;
	return mem_strdup(buffer_cstr(&out));
}

static const char *cluster_attr(xmlNode *node, const char *name, char *buf,
				size_t size)
{
	xmlChar *value = xmlGetProp(node, (const xmlChar *)name);

	snprintf(buf, size, "%s", value != NULL ? (const char *)value : "");
	xmlFree(value);
	return buf;
}

static bool cluster_attr_true(xmlNode *node, const char *name)
{
	char buf[16];

	return strcmp(cluster_attr(node, name, buf, sizeof(buf)), "true") == 0;
}

static bool cluster_is(xmlNode *node, const char *name)
{
	return node->type == XML_ELEMENT_NODE &&
		strcmp((const char *)node->name, name) == 0;
}

/* VIP addresses by resource id, from the CIB */
struct cluster_vip {
	char id[128];
	char ip[64];
};

static unsigned int cluster_read_vips(struct cluster_vip *vips, unsigned int max)
{
	char *xml;
	int status;
	xmlDoc *doc;
	unsigned int count = 0;

	xml = cluster_run("cibadmin --query --scope resources 2>/dev/null", &status);
	if (xml == NULL)
		return 0;
	doc = xmlReadMemory(xml, (int)strlen(xml), "cib.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	free(xml);
	if (doc == NULL)
		return 0;
	/* Walk every primitive of type IPaddr2 (also inside groups/clones). */
	for (xmlNode *n = xmlDocGetRootElement(doc); n != NULL && count < max; ) {
		char type[64];

		if (cluster_is(n, "primitive") &&
		    strcmp(cluster_attr(n, "type", type, sizeof(type)), "IPaddr2") == 0) {
			cluster_attr(n, "id", vips[count].id, sizeof(vips[count].id));
			vips[count].ip[0] = '\0';
			for (xmlNode *ia = n->children; ia != NULL; ia = ia->next) {
				if (!cluster_is(ia, "instance_attributes"))
					continue;
				for (xmlNode *nv = ia->children; nv != NULL; nv = nv->next) {
					char name[32];

					if (cluster_is(nv, "nvpair") &&
					    strcmp(cluster_attr(nv, "name", name, sizeof(name)),
						   "ip") == 0)
						cluster_attr(nv, "value", vips[count].ip,
							     sizeof(vips[count].ip));
				}
			}
			count++;
		}
		/* depth-first traversal */
		if (n->children != NULL && !cluster_is(n, "primitive")) {
			n = n->children;
			continue;
		}
		while (n != NULL && n->next == NULL)
			n = n->parent;
		if (n != NULL)
			n = n->next;
	}
	xmlFreeDoc(doc);
	return count;
}

/* cluster_resource - one <resource> of crm_mon's output */
static void cluster_resource(struct cluster_view *v, xmlNode *res,
			     const struct cluster_vip *vips, unsigned int vip_count)
{
	char agent[128], id[128], role[32];
	bool failed = cluster_attr_true(res, "failed");
	bool is_cm, is_vip;

	cluster_attr(res, "resource_agent", agent, sizeof(agent));
	cluster_attr(res, "id", id, sizeof(id));
	cluster_attr(res, "role", role, sizeof(role));
	is_cm = strcmp(agent, "ocf:clustermail:clustermail") == 0;
	is_vip = strcmp(agent, "ocf:heartbeat:IPaddr2") == 0;
	if (!is_cm && !is_vip)
		return;
	for (xmlNode *n = res->children; n != NULL; n = n->next) {
		char name[64];
		struct cluster_row *r;

		if (!cluster_is(n, "node"))
			continue;
		if ((r = cluster_row_get(v, cluster_attr(n, "name", name,
							  sizeof(name)))) == NULL)
			continue;
		if (is_cm) {
			snprintf(r->clustermail, sizeof(r->clustermail), "%s",
				 failed ? "failed" :
				 strcmp(role, "Started") == 0 ? "started" :
				 strcmp(role, "Stopping") == 0 ? "stopping" :
				 strcmp(role, "Starting") == 0 ? "starting" : "stopped");
		} else if (strcmp(role, "Started") == 0) {
			const char *ip = id;
			size_t len = strlen(r->vips);

			for (unsigned int i = 0; i < vip_count; i++) {
				if (strcmp(vips[i].id, id) == 0 && vips[i].ip[0] != '\0')
					ip = vips[i].ip;
			}
			snprintf(r->vips + len, sizeof(r->vips) - len, "%s%s",
				 len > 0 ? " " : "", ip);
		}
	}
}

static void cluster_read_pacemaker(struct cluster_view *v)
{
	struct cluster_vip vips[64];
	unsigned int vip_count;
	char *xml;
	int status;
	xmlDoc *doc;
	xmlNode *root;

	xml = cluster_run("crm_mon --one-shot --inactive --output-as=xml 2>/dev/null",
			  &status);
	if (xml == NULL) {
		snprintf(v->pcmk_error, sizeof(v->pcmk_error), "%s",
			 status == 127 ? "crm_mon is not installed" :
			 "pacemaker is not running on this node");
		return;
	}
	doc = xmlReadMemory(xml, (int)strlen(xml), "crm_mon.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	free(xml);
	if (doc == NULL || (root = xmlDocGetRootElement(doc)) == NULL) {
		snprintf(v->pcmk_error, sizeof(v->pcmk_error),
			 "crm_mon printed no XML that libxml2 could read");
		if (doc != NULL)
			xmlFreeDoc(doc);
		return;
	}
	v->pcmk_answered = true;
	vip_count = cluster_read_vips(vips, N_ELEMENTS(vips));
	for (xmlNode *sec = root->children; sec != NULL; sec = sec->next) {
		if (cluster_is(sec, "summary")) {
			for (xmlNode *n = sec->children; n != NULL; n = n->next) {
				if (cluster_is(n, "current_dc")) {
					cluster_attr(n, "name", v->dc, sizeof(v->dc));
					v->quorate = cluster_attr_true(n, "with_quorum");
				}
			}
		} else if (cluster_is(sec, "nodes")) {
			for (xmlNode *n = sec->children; n != NULL; n = n->next) {
				char name[64];
				struct cluster_row *r;

				if (!cluster_is(n, "node"))
					continue;
				r = cluster_row_get(v, cluster_attr(n, "name", name,
								    sizeof(name)));
				if (r == NULL)
					continue;
				r->pcmk_known = true;
				r->online = cluster_attr_true(n, "online");
				r->standby = cluster_attr_true(n, "standby");
			}
		} else if (cluster_is(sec, "resources")) {
			for (xmlNode *n = sec->children; n != NULL; n = n->next) {
				if (cluster_is(n, "resource")) {
					cluster_resource(v, n, vips, vip_count);
				} else if (cluster_is(n, "clone") || cluster_is(n, "group")) {
					for (xmlNode *c = n->children; c != NULL; c = c->next) {
						if (cluster_is(c, "resource"))
							cluster_resource(v, c, vips, vip_count);
						else if (cluster_is(c, "group"))
							for (xmlNode *g = c->children; g != NULL; g = g->next)
								if (cluster_is(g, "resource"))
									cluster_resource(v, g, vips, vip_count);
					}
				}
			}
		}
	}
	xmlFreeDoc(doc);
}

/* ---- output -------------------------------------------------------------- */

static void cluster_print_json(const struct cluster_view *v)
{
	struct buffer out;
	struct json_writer w;

	buffer_init(&out, 0);
	json_init(&w, &out);
	json_object_begin(&w);
	json_key(&w, "cpg");
	json_object_begin(&w);
	json_kv_bool(&w, "answered", v->cpg_answered);
	json_kv_string(&w, "error", v->cpg_error);
	json_kv_string(&w, "mode", v->mode);
	json_kv_string(&w, "group", v->group);
	json_kv_bool(&w, "joined", v->joined);
	json_kv_string(&w, "last_error", v->last_error);
	json_kv_uint(&w, "members", v->members);
	json_object_end(&w);
	json_key(&w, "pacemaker");
	json_object_begin(&w);
	json_kv_bool(&w, "answered", v->pcmk_answered);
	json_kv_string(&w, "error", v->pcmk_error);
	json_kv_string(&w, "dc", v->dc);
	json_kv_bool(&w, "quorate", v->quorate);
	json_object_end(&w);
	json_key(&w, "nodes");
	json_array_begin(&w);
	for (unsigned int i = 0; i < v->count; i++) {
		const struct cluster_row *r = &v->rows[i];

		json_object_begin(&w);
		json_kv_string(&w, "name", r->name);
		json_kv_bool(&w, "self", r->self);
		json_kv_bool(&w, "cpg_member", r->member);
		if (r->member) {
			json_kv_uint(&w, "corosync_nodeid", r->nodeid);
			json_kv_uint(&w, "pid", r->pid);
		}
		if (r->has_state) {
			json_kv_uint(&w, "connections", r->connections);
			json_kv_uint(&w, "queue_active", r->queue_active);
			json_kv_uint(&w, "queue_queued", r->queue_queued);
			json_kv_uint(&w, "lock_waits", r->lock_waits);
			json_kv_uint(&w, "lock_timeouts", r->lock_timeouts);
			json_kv_bool(&w, "draining", r->draining);
		}
		if (r->pcmk_known) {
			json_kv_bool(&w, "online", r->online);
			json_kv_bool(&w, "standby", r->standby);
			json_kv_string(&w, "clustermail", r->clustermail[0] != '\0' ?
				       r->clustermail : "stopped");
			json_key(&w, "vips");
			json_array_begin(&w);
			for (const char *p = r->vips; *p != '\0'; ) {
				size_t len = strcspn(p, " ");
				char ip[64];

				snprintf(ip, sizeof(ip), "%.*s", (int)len, p);
				json_string(&w, ip);
				p += len;
				while (*p == ' ')
					p++;
			}
			json_array_end(&w);
		}
		json_object_end(&w);
	}
	json_array_end(&w);
	json_object_end(&w);
	printf("%s\n", buffer_cstr(&out));
	buffer_clear(&out);
}

static void cluster_print_text(const struct cluster_view *v)
{
	if (v->cpg_answered)
		printf("corosync CPG: %s (cluster = %s, group %s, %llu member%s)%s%s\n",
		       v->joined ? "joined" : "not joined", v->mode, v->group,
		       (unsigned long long)v->members, v->members == 1 ? "" : "s",
		       v->last_error[0] != '\0' ? ": " : "", v->last_error);
	else
		printf("corosync CPG: unknown (%s)\n", v->cpg_error);
	if (v->pcmk_answered)
		printf("pacemaker:    running (DC %s, %s)\n",
		       v->dc[0] != '\0' ? v->dc : "none",
		       v->quorate ? "quorate" : "NOT quorate");
	else
		printf("pacemaker:    %s\n", v->pcmk_error);
	printf("\n%-16s %-8s %-12s %-6s %-6s %-8s %-9s %s\n", "NODE", "ONLINE",
	       "CLUSTERMAIL", "CPG", "CONNS", "QUEUE", "LOCKWAIT", "VIPS");
	for (unsigned int i = 0; i < v->count; i++) {
		const struct cluster_row *r = &v->rows[i];
		char conns[16] = "-", queue[24] = "-", waits[24] = "-";
		char name[80];

		if (r->has_state) {
			snprintf(conns, sizeof(conns), "%llu",
				 (unsigned long long)r->connections);
			snprintf(queue, sizeof(queue), "%llu/%llu",
				 (unsigned long long)r->queue_active,
				 (unsigned long long)r->queue_queued);
			snprintf(waits, sizeof(waits), "%llu",
				 (unsigned long long)r->lock_waits);
		}
		snprintf(name, sizeof(name), "%s%s", r->name, r->self ? "*" : "");
		printf("%-16s %-8s %-12s %-6s %-6s %-8s %-9s %s\n", name,
		       !r->pcmk_known ? "-" : r->standby ? "standby" :
		       r->online ? "yes" : "no",
		       !r->pcmk_known ? "-" : r->clustermail[0] != '\0' ?
		       r->clustermail : "stopped",
		       r->member ? (r->draining ? "drain" : "yes") : "no",
		       conns, queue, waits, r->vips[0] != '\0' ? r->vips : "-");
	}
	printf("\n* this node; QUEUE = deliveries running / messages queued\n");
}

int cmd_cluster(struct ctl *ctl, int argc, char **argv)
{
	struct cluster_view *v;
	int ret;

	if (argc != 2 || strcmp(argv[1], "status") != 0) {
		ctl_error("usage: clustermailctl cluster status [--json]");
		return CTL_EXIT_USAGE;
	}
	v = mem_zalloc(sizeof(*v));
	cluster_read_cpg(ctl, v);
	cluster_read_pacemaker(v);
	if (ctl->json)
		cluster_print_json(v);
	else
		cluster_print_text(v);
	ret = v->cpg_answered || v->pcmk_answered ? CTL_EXIT_OK :
		CTL_EXIT_UNAVAILABLE;
	free(v);
	return ret;
}
