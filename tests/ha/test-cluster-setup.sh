#!/bin/sh
# test-cluster-setup.sh - offline checks of the recipe generator
# ha/cluster-setup (make check; no cluster needed, a few seconds):
#   - the recipes in ha/recipes/ are exactly what the generator prints
#     (run with --regenerate to rewrite them after changing the generator);
#   - every CIB variant (gfs2, ocfs2, nfs, local) passes crm_verify and has
#     the expected resources and constraints;
#   - the pcs scripts are valid sh (and shellcheck-clean, if installed);
#   - the crm and pcs variants create the same resources as the CIB one;
#   - bad option combinations are refused.
# The crm and pcs variants are applied for real by make check-ha.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top_srcdir=${top_srcdir:-$(cd "$here/../.." && pwd)}
python=${PYTHON3:-python3}
setup=$top_srcdir/ha/cluster-setup
recipes=$top_srcdir/ha/recipes

command -v "$python" >/dev/null 2>&1 || { echo "SKIP: no $python"; exit 77; }

tmp=$(mktemp -d /tmp/cmha-setup.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

cs() {
	"$python" "$setup" "$@"
}

nodes=node1,node2,node3
vips=192.0.2.11,192.0.2.12,192.0.2.13

# recipe NAME FMT - print one of the committed recipes
recipe() {
	case $1 in
	gfs2)
		cs --print "$2" --nodes "$nodes" --vips "$vips" --fs gfs2 \
			--device /dev/vg_mail/spool ;;
	nfs)
		cs --print "$2" --nodes "$nodes" --vips "$vips" --fs nfs \
			--device nfs-server.example.net:/srv/clustermail \
			--stonith fence_ipmilan:ip=192.0.2.201,username=fence,password_script=/etc/cluster/ipmi-password,lanplus=1,pcmk_host_list=node1 \
			--stonith fence_ipmilan:ip=192.0.2.202,username=fence,password_script=/etc/cluster/ipmi-password,lanplus=1,pcmk_host_list=node2 \
			--stonith fence_ipmilan:ip=192.0.2.203,username=fence,password_script=/etc/cluster/ipmi-password,lanplus=1,pcmk_host_list=node3 ;;
	esac
}

suffix() {
	case $1 in
	pcs) echo pcs.sh ;;
	crm) echo crm ;;
	cib) echo cib.xml ;;
	esac
}

if [ "${1:-}" = --regenerate ]; then
	mkdir -p "$recipes"
	for name in gfs2 nfs; do
		for fmt in pcs crm cib; do
			recipe "$name" "$fmt" >"$recipes/$name.$(suffix "$fmt")"
		done
		chmod 0755 "$recipes/$name.pcs.sh"
	done
	echo "rewrote the recipes in $recipes"
	exit 0
fi

# ---- the committed recipes are up to date
for name in gfs2 nfs; do
	for fmt in pcs crm cib; do
		file=$recipes/$name.$(suffix "$fmt")
		recipe "$name" "$fmt" >"$tmp/$name.$fmt"
		if ! cmp -s "$tmp/$name.$fmt" "$file"; then
			fail "$file differs from the generator's output (run $0 --regenerate)"
			diff -u "$file" "$tmp/$name.$fmt" | head -n 20 || true
		fi
	done
done

# ---- every file system variant: valid CIB, expected content
for fs in gfs2 ocfs2 nfs local; do
	set -- --nodes n1,n2,n3 --vips 10.0.0.11,10.0.0.12,10.0.0.13 --fs "$fs" --nic eth0
	case $fs in
	nfs) set -- "$@" --stonith fence_xvm:key_file=/etc/cluster/fence_xvm.key ;;
	local) set -- "$@" --stonith none ;;
	esac
	for fmt in pcs crm cib; do
		cs --print "$fmt" "$@" >"$tmp/$fs.$fmt" || fail "--fs $fs --print $fmt: exit $?"
	done
	if command -v crm_verify >/dev/null 2>&1; then
		crm_verify --xml-file "$tmp/$fs.cib" || fail "--fs $fs: crm_verify rejects the CIB"
	else
		echo "note: crm_verify not installed, CIB not verified"
	fi
	"$python" - "$fs" "$tmp/$fs.cib" "$tmp/$fs.crm" "$tmp/$fs.pcs" <<'EOF' || fail "--fs $fs: content"
import re, sys, xml.etree.ElementTree as ET
fs, cib, crm, pcs = sys.argv[1:]
root = ET.parse(cib).getroot()
conf = root.find("configuration")
props = {n.get("name"): n.get("value") for n in conf.iter("nvpair")
         if n.get("id", "").startswith("cib-bootstrap-options")}
errors = []
def expect(cond, what):
    if not cond:
        errors.append(what)
expect(props.get("no-quorum-policy") == "freeze", "no-quorum-policy=freeze")
expect(props.get("stonith-enabled") == ("false" if fs == "local" else "true"),
       "stonith-enabled")
prims = {p.get("id"): p for p in conf.iter("primitive")}
clones = {c.get("id"): c.find("primitive").get("id") for c in conf.iter("clone")}
want_clones = {"clustermail-clone": "clustermail"}
if fs in ("gfs2", "ocfs2"):
    want_clones["dlm-clone"] = "dlm"
if fs != "local":
    want_clones["mailfs-clone"] = "mailfs"
expect(clones == want_clones, f"clones {clones}")
for c in conf.iter("clone"):
    meta = {n.get("name"): n.get("value") for n in c.iter("nvpair")
            if "meta" in n.get("id")}
    expect(meta.get("interleave") == "true", f"{c.get('id')} interleave")
expect(prims["clustermail"].get("type") == "clustermail"
       and prims["clustermail"].get("provider") == "clustermail", "clustermail agent")
for i, node in enumerate(("n1", "n2", "n3"), start=1):
    vip = prims.get(f"vip{i}")
    expect(vip is not None and vip.get("type") == "IPaddr2", f"vip{i}")
    loc = [l for l in conf.iter("rsc_location") if l.get("rsc") == f"vip{i}"]
    expect(len(loc) == 1 and loc[0].get("node") == node and int(loc[0].get("score")) > 0,
           f"vip{i} prefers {node}")
    col = [c for c in conf.iter("rsc_colocation") if c.get("rsc") == f"vip{i}"]
    expect(len(col) == 1 and col[0].get("with-rsc") == "clustermail-clone"
           and col[0].get("score") == "INFINITY", f"vip{i} with clustermail")
# the stack: each clone ordered after and colocated with the one below
stack = [c for c in ("dlm-clone", "mailfs-clone", "clustermail-clone") if c in clones]
for lower, upper in zip(stack, stack[1:]):
    expect(any(o.get("first") == lower and o.get("then") == upper
               and o.get("kind") == "Mandatory" for o in conf.iter("rsc_order")),
           f"order {lower} then {upper}")
    expect(any(c.get("rsc") == upper and c.get("with-rsc") == lower
               for c in conf.iter("rsc_colocation")), f"colocation {upper} with {lower}")
fencing = [p for p in prims.values() if p.get("class") == "stonith"]
expect(len(fencing) == (0 if fs == "local" else 1), "fencing devices")
# crm and pcs: the same resources
ids = set(prims)
crm_ids = set(re.findall(r"^primitive (\S+)", open(crm).read(), re.M))
pcs_ids = set(re.findall(r"^pcs (?:-f \S+ )?(?:resource|stonith) create (\S+)",
                         open(pcs).read(), re.M))
expect(crm_ids == ids, f"crm primitives {sorted(crm_ids)} != {sorted(ids)}")
expect(pcs_ids == ids, f"pcs resources {sorted(pcs_ids)} != {sorted(ids)}")
for line in open(crm):
    expect(not line.startswith("#") or "--" not in line, "crm comment with --")
if errors:
    print("\n".join(errors))
    sys.exit(1)
EOF
	sh -n "$tmp/$fs.pcs" || fail "--fs $fs: the pcs script is not valid sh"
	if command -v shellcheck >/dev/null 2>&1; then
		shellcheck -s sh "$tmp/$fs.pcs" || fail "--fs $fs: shellcheck on the pcs script"
	fi
done

# ---- options that must be refused
refuse() {
	if cs "$@" >/dev/null 2>"$tmp/err"; then
		fail "accepted: $*"
	fi
}
refuse --print cib --nodes n1,n2 --vips 10.0.0.1
refuse --print cib --nodes n1,n1 --vips 10.0.0.1,10.0.0.2
refuse --print cib --nodes n1,n2 --vips 10.0.0.1,10.0.0.2 --stonith none
refuse --print cib --nodes n1,n2 --vips 10.0.0.1,10.0.0.2 --fs nfs
refuse --print crm --nodes n1,n2 --vips 10.0.0.1,10.0.0.2 --cib-file x.xml
refuse --print cib --nodes n1,n2 --vips 10.0.0.1,10.0.0.2 --stonith none --stonith fence_xvm

# ---- pcs --cib-file: every command edits the file, none the live cluster
cs --print pcs --nodes n1,n2 --vips 10.0.0.1,10.0.0.2 --fs local --stonith none \
	--cib-file /tmp/x.xml >"$tmp/f.pcs"
if grep '^pcs ' "$tmp/f.pcs" | grep -qv '^pcs -f /tmp/x.xml '; then
	fail "--cib-file: a pcs command without -f"
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures check(s) failed"
	exit 1
fi
echo "ha/cluster-setup: all offline checks passed"
