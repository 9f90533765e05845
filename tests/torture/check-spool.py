#!/usr/bin/env python3
"""check-spool.py - prove the store's invariants after a torture run.

Reads every journal written by `torture --init/--run` (one file per process
lifetime, "segment"), the final state printed by `torture --dump`, and the
driver's record of how each segment ended; prints each violation with the
journal lines that concern it; exits 0 when there is none, 1 otherwise.

What is proven (DESIGN invariants 1 and 4, store.h's contract):
  - every acknowledged delivery, append and copy is in its mailbox at the
    end, unless an expunge or move that may have removed it was logged
    (an acknowledged one, or one whose process died before its result);
  - no message is there more often than it can have arrived (deliveries
    and appends are never duplicated, nothing appears from nowhere), and
    nothing whose delivery or append was refused (TEMP) is there;
  - a UID always names the same message (every process's reads, the
    acknowledged UIDs of appends and copies, and the final state agree);
  - no UID whose expunge (or move) was acknowledged is there at the end;
  - UIDs strictly increase and stay below UIDNEXT, modseqs are at most
    HIGHESTMODSEQ; UIDVALIDITY never changed; HIGHESTMODSEQ and UIDNEXT
    never went back as seen by any process, and the final values are not
    below anything any process saw; a (UID, modseq) pair always shows the
    same flags;
  - every message file holds exactly the content its Message-ID names,
    with the right size and RFC822.SIZE;
  - `store_index_check` finds no problem before and after the final sync;
    STATUS agrees with the view; nothing is left pending in new/;
  - every process either ran to its deadline and exited 0 or was killed
    by the driver; no in-process check (torture.c) failed;
  - the run did real work: every kind of operation succeeded at least once;
  - mailboxes that are created, deleted and renamed while others deliver
    into them (Tmp/A, Tmp/B): every message found in them at the end is
    intact, was meant for one of them, and is there once. That nothing
    acknowledged was lost is not claimed for them: a delete takes its
    messages along.
"""
import argparse
import collections
import os
import sys

MAILBOXES = ("INBOX", "Archive", "Work/Sub")
CHURN_PREFIX = "Tmp/"    # torture.c: created, deleted, renamed on the fly
MAX_PER_KIND = 15
# most telling first: a dead process or a broken final state explains
# much of what follows it
KIND_ORDER = ("process", "final state", "index check", "accounting",
              "in-process", "journal")
CONTEXT_LINES = 12


class Journal:
    """All journal lines, kept raw (a long run has millions), parsed as
    they are walked."""

    def __init__(self):
        self.files = []          # (segment, [raw lines])
        self.count = 0

    def load(self, directory):
        names = sorted(n for n in os.listdir(directory) if n.endswith(".log"))
        # init.log first: it holds the initial UIDVALIDITYs
        names.sort(key=lambda n: (n != "init.log", n))
        for name in names:
            with open(os.path.join(directory, name), encoding="utf-8",
                      errors="replace") as f:
                lines = f.read().splitlines()
            self.files.append((name[:-4], lines))
            self.count += len(lines)
        return [seg for seg, _ in self.files]

    def walk(self):
        """(where, type, fields, raw) for every line, file by file"""
        for seg, lines in self.files:
            for no, raw in enumerate(lines, 1):
                parts = raw.split(" ")
                if len(parts) < 2:
                    # one write(2) per line: a SIGKILL cannot cut one
                    yield f"{seg}:{no}", "garbled", [], raw
                else:
                    yield f"{seg}:{no}", parts[1], parts[2:], raw

    def mentioning(self, token, limit=CONTEXT_LINES):
        out = []
        for seg, lines in self.files:
            for no, raw in enumerate(lines, 1):
                if token in raw and token in raw.split(" "):
                    out.append(f"    {seg}:{no}: {raw}")
        if len(out) > limit:
            out = out[:limit // 2] + [f"    ... {len(out) - limit} more"] + \
                out[-limit // 2:]
        return out


def uid_list(text):
    return [] if text in ("-", "deleted") else [int(x) for x in text.split(",")]


class Checker:
    def __init__(self, journal):
        self.j = journal
        self.violations = []     # (text, [context tokens])
        self.uidv0 = {}
        self.mid_of = {}         # (user, box, uid) -> (mid, where)
        self.state_at = {}       # (user, box, uid, modseq) -> (flags, kw, where)
        self.arrivals = collections.defaultdict(collections.Counter)
        self.refused = collections.defaultdict(collections.Counter)
        self.acked_uid = []      # (user, box, uid, mid, where, how)
        self.acked_deliveries = []   # (user, box, mid, where)
        self.maybe_expunged = collections.defaultdict(set)
        self.acked_expunged = collections.defaultdict(dict)
        self.deleted_cand = collections.defaultdict(set)
        self.uncertain_deleted = collections.defaultdict(list)
        self.copy_pairs = []     # (user, src, dst, srcuid, dstuid)
        self.max_seen = {}       # (user, box) -> [hms, where, uidnext, where]
        self.acks = collections.Counter()
        self.unresolved = []
        self.ended = {}          # segment -> "end" fields
        self.store_temp = collections.Counter()
        self.churn_mids = set()  # meant for a churn mailbox (Tmp/...)

    def violation(self, text, *tokens, kind="accounting"):
        self.violations.append((kind, text,
                                [t for t in tokens if t and t != "-"]))

    # ---- journals -----------------------------------------------------

    def note_mid(self, user, box, uid, mid, where):
        key = (user, box, uid)
        old = self.mid_of.get(key)
        if old is None:
            self.mid_of[key] = (mid, where)
        elif old[0] != mid:
            self.violation(f"{user} {box}: UID {uid} names two messages: "
                           f"{old[0]} ({old[1]}) and {mid} ({where})",
                           old[0], mid)

    def note_uidvalidity(self, user, box, uidv, where):
        want = self.uidv0.get((user, box))
        if want is not None and int(uidv) != want:
            self.violation(f"{user} {box}: UIDVALIDITY {uidv} at {where}, "
                           f"the run started with {want}")

    def note_max(self, user, box, uidnext, hms, where, last):
        key = (user, box)
        prev = last.get(key)
        if prev is not None and (hms < prev[0] or uidnext < prev[1]):
            self.violation(f"{user} {box}: went back at {where}: "
                           f"HIGHESTMODSEQ {prev[0]} -> {hms}, "
                           f"UIDNEXT {prev[1]} -> {uidnext} (after {prev[2]})")
        last[key] = (max(hms, prev[0] if prev else 0),
                     max(uidnext, prev[1] if prev else 0), where)
        m = self.max_seen.setdefault(key, [0, "", 0, ""])
        if hms > m[0]:
            m[0], m[1] = hms, where
        if uidnext > m[2]:
            m[2], m[3] = uidnext, where

    def read_journals(self):
        seg_of = lambda where: where.rsplit(":", 1)[0]
        pending = {}             # segment -> (type, fields, where)
        last = {}                # per segment: (user, box) -> maxima
        cur_seg = None
        for where, typ, f, raw in self.j.walk():
            seg = seg_of(where)
            if seg != cur_seg:
                cur_seg, last = seg, {}
            try:
                self.read_line(seg, where, typ, f, pending, last)
            except (IndexError, ValueError) as e:
                self.violation(f"unparsable journal line {where}: {raw} ({e})",
                               kind="journal")
        for seg, (typ, f, where) in pending.items():
            self.unresolved.append((seg, typ, f, where))
            if typ == "expunge-intent" and f[2] == "deleted":
                self.uncertain_deleted[(f[0], f[1])].append(where)

    def read_line(self, seg, where, typ, f, pending, last):
        if typ == "init":
            self.uidv0[(f[0], f[1])] = int(f[2])
        elif typ.endswith("-intent"):
            pending[seg] = (typ, f, where)
            self.read_intent(typ, f, where)
        elif typ.endswith("-ack") or typ.endswith("-fail"):
            intent = pending.pop(seg, None)
            if typ.endswith("-ack"):
                self.acks[typ[:-4]] += 1
                self.read_ack(typ, f, where, intent)
            else:
                self.store_temp[typ[:-5]] += 1
                self.read_fail(typ, f, where, intent)
        elif typ == "seen":
            user, box, uidv, uid, mid, modseq, flags, kw = f
            self.note_uidvalidity(user, box, uidv, where)
            self.note_mid(user, box, int(uid), mid, where)
            key = (user, box, int(uid), int(modseq))
            old = self.state_at.get(key)
            if old is None:
                self.state_at[key] = (flags, kw, where)
            elif old[:2] != (flags, kw):
                self.violation(f"{user} {box}: UID {uid} at modseq {modseq}"
                               f" has flags {old[0]} {old[1]} ({old[2]}) and "
                               f"{flags} {kw} ({where})", mid)
            if "D" in flags:
                self.deleted_cand[(user, box)].add(int(uid))
        elif typ in ("view", "status"):
            user, box, uidv, uidnext, hms = f[0], f[1], f[2], int(f[3]), int(f[4])
            self.note_uidvalidity(user, box, uidv, where)
            self.note_max(user, box, uidnext, hms, where, last)
        elif typ == "violation":
            self.violation(f"in-process check at {where}: {' '.join(f)}",
                           *[t for t in f if t.startswith("<")],
                           kind="in-process")
        elif typ == "end":
            self.ended[seg] = " ".join(f)
        elif typ == "churn":
            if f[0] == "intent":
                self.churn_mids.add(f[1])
        elif typ in ("start", "garbled"):
            pass
        else:
            self.violation(f"unknown journal line type {typ} at {where}",
                           kind="journal")

    def read_intent(self, typ, f, where):
        if typ == "deliver-intent":
            self.arrivals[(f[2], f[3])][f[0]] += 1
        elif typ == "append-intent":
            self.arrivals[(f[1], f[2])][f[0]] += 1
        elif typ == "store-intent":
            user, box, mode, flags = f[0], f[1], f[2], f[3]
            if "D" in flags and mode in ("add", "replace"):
                self.deleted_cand[(user, box)].update(uid_list(f[6]))
        elif typ == "expunge-intent":
            self.maybe_expunged[(f[0], f[1])].update(uid_list(f[2]))
        elif typ == "copy-intent":
            user, src, dst, move, uids = f[0], f[1], f[2], f[3] == "1", uid_list(f[4])
            for uid in uids:
                mid = self.mid_of.get((user, src, uid))
                if mid is None:
                    self.violation(f"{where}: copy of UID {uid} whose id "
                                   "was never read (torture bug)")
                    continue
                self.arrivals[(user, dst)][mid[0]] += 1
            if move:
                self.maybe_expunged[(user, src)].update(uids)

    def read_ack(self, typ, f, where, intent):
        if intent is None or intent[0][:-7] != typ[:-4]:
            self.violation(f"{where}: {typ} without its intent (torture bug)")
        if typ == "deliver-ack":
            self.acked_deliveries.append((f[1], f[2], f[0], where))
        elif typ == "append-ack":
            mid, user, box, uidv, uid = f[0], f[1], f[2], f[3], int(f[4])
            self.note_uidvalidity(user, box, uidv, where)
            self.note_mid(user, box, uid, mid, where)
            self.acked_uid.append((user, box, uid, mid, where, "appended"))
        elif typ == "expunge-ack":
            for uid in uid_list(f[2]):
                self.maybe_expunged[(f[0], f[1])].add(uid)
                self.acked_expunged[(f[0], f[1])][uid] = where
        elif typ == "copy-ack":
            user, src, dst, move = f[0], f[1], f[2], f[3] == "1"
            self.note_uidvalidity(user, dst, f[4], where)
            pairs = [] if f[5] == "-" else \
                [tuple(int(x) for x in p.split(":")) for p in f[5].split(",")]
            for s, d in pairs:
                mid = self.mid_of.get((user, src, s), (None,))[0]
                if mid is not None:
                    self.note_mid(user, dst, d, mid, where)
                self.acked_uid.append((user, dst, d, mid, where,
                                       "moved" if move else "copied"))
                self.copy_pairs.append((user, src, dst, s, d))
                if move:
                    self.maybe_expunged[(user, src)].add(s)
                    self.acked_expunged[(user, src)][s] = where

    def read_fail(self, typ, f, where, intent):
        if intent is None:
            self.violation(f"{where}: {typ} without its intent (torture bug)")
            return
        ityp, fi, _ = intent
        if typ == "deliver-fail":
            self.refused[(f[1], f[2])][f[0]] += 1
        elif typ == "append-fail":
            self.refused[(f[1], f[2])][f[0]] += 1
        elif typ == "expunge-fail" and fi[2] == "deleted":
            # TEMP promises a rollback, but stay lenient for expunges
            self.uncertain_deleted[(fi[0], fi[1])].append(where)

    def settle_deleted(self):
        """\\Deleted travels with copies; an expunge of every \\Deleted
        message that may have happened covers all such candidates."""
        changed = True
        while changed:
            changed = False
            for user, src, dst, s, d in self.copy_pairs:
                if s in self.deleted_cand[(user, src)] and \
                        d not in self.deleted_cand[(user, dst)]:
                    self.deleted_cand[(user, dst)].add(d)
                    changed = True
        for key in self.uncertain_deleted:
            self.maybe_expunged[key] |= self.deleted_cand[key]

    # ---- final state ----------------------------------------------------

    def read_dump(self, path):
        boxes = {}               # (user, box) -> dict
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                p = raw.split()
                if not p:
                    continue
                if p[0] == "list":
                    names = set(p[3:])
                    if p[2] != "0":
                        self.violation(f"store_list({p[1]}) failed: {p[2]}",
                                       kind="final state")
                    for box in MAILBOXES:
                        if p[2] == "0" and box not in names:
                            self.violation(f"{p[1]}: mailbox {box} missing "
                                           f"from the list: {' '.join(p[3:])}",
                                           kind="final state")
                elif p[0] == "check":
                    if p[4] != "0" or p[5] != "0":
                        self.violation(f"index check ({p[1]} the final sync) "
                                       f"of {p[2]} {p[3]}: result {p[4]}, "
                                       f"{p[5]} problems", kind="index check")
                elif p[0] == "check-problem":
                    self.violation(f"index check ({p[1]}) {p[2]} {p[3]}: "
                                   f"{' '.join(p[4:])}", kind="index check")
                elif p[0] == "open-failed":
                    self.violation(f"final open of {p[1]} {p[2]} failed: {p[3]}",
                                   kind="final state")
                elif p[0] == "mailbox":
                    boxes[(p[1], p[2])] = {
                        "uidv": int(p[3]), "uidnext": int(p[4]),
                        "hms": int(p[5]), "count": int(p[6]), "msgs": []}
                elif p[0] == "msg":
                    boxes[(p[1], p[2])]["msgs"].append(
                        (int(p[3]), int(p[4]), p[5], p[6], p[7]))
                elif p[0] == "status":
                    b = boxes.get((p[1], p[2]))
                    ret, messages, uidv, uidnext, hms, pending = p[3:9]
                    if ret != "0" or b is None:
                        self.violation(f"final STATUS {p[1]} {p[2]}: {ret}",
                                       kind="final state")
                    elif (int(messages), int(uidv), int(uidnext), int(hms),
                          int(pending)) != (len(b["msgs"]), b["uidv"],
                                            b["uidnext"], b["hms"], 0):
                        self.violation(
                            f"final STATUS {p[1]} {p[2]} says messages "
                            f"{messages} uidvalidity {uidv} uidnext {uidnext}"
                            f" hms {hms} pending {pending}; the view: "
                            f"{len(b['msgs'])} {b['uidv']} {b['uidnext']} "
                            f"{b['hms']} 0", kind="final state")
        return boxes

    def check_box(self, user, box, b):
        key = (user, box)
        if self.uidv0.get(key) is not None and b["uidv"] != self.uidv0[key]:
            self.violation(f"{user} {box}: final UIDVALIDITY {b['uidv']}, "
                           f"the run started with {self.uidv0[key]}")
        if b["count"] != len(b["msgs"]):
            self.violation(f"{user} {box}: count {b['count']}, "
                           f"{len(b['msgs'])} records")
        m = self.max_seen.get(key)
        if m is not None and (b["hms"] < m[0] or b["uidnext"] < m[2]):
            self.violation(f"{user} {box}: final HIGHESTMODSEQ {b['hms']} / "
                           f"UIDNEXT {b['uidnext']} below what was seen: "
                           f"{m[0]} ({m[1]}) / {m[2]} ({m[3]})")
        prev = 0
        present = {}
        per_mid = collections.Counter()
        for uid, modseq, flags, mid, verdict in b["msgs"]:
            if uid <= prev or uid >= b["uidnext"]:
                self.violation(f"{user} {box}: final UID {uid} after {prev}, "
                               f"UIDNEXT {b['uidnext']}", mid)
            if not 1 <= modseq <= b["hms"]:
                self.violation(f"{user} {box}: UID {uid} modseq {modseq}, "
                               f"HIGHESTMODSEQ {b['hms']}", mid)
            if verdict != "ok":
                self.violation(f"{user} {box}: UID {uid} ({mid}): {verdict}",
                               mid)
            prev = uid
            present[uid] = mid
            per_mid[mid] += 1
            known = self.mid_of.get((user, box, uid))
            if known is not None and known[0] != mid:
                self.violation(f"{user} {box}: UID {uid} holds {mid} at the "
                               f"end but held {known[0]} ({known[1]})",
                               mid, known[0])
        for mid, n in per_mid.items():
            possible = self.arrivals[key][mid]
            refused = self.refused[key][mid]
            if n > possible:
                what = "never delivered, appended or copied here" \
                    if possible == 0 else f"can have arrived {possible} times"
                self.violation(f"{user} {box}: {mid} is there {n} times, "
                               f"{what}", mid)
            elif refused and n > possible - refused:
                self.violation(f"{user} {box}: {mid} is there although its "
                               "delivery/append was refused", mid)
        return present

    def check_final(self, boxes):
        present = {}
        for user, box in sorted(self.uidv0):
            if (user, box) not in boxes:
                self.violation(f"{user} {box}: not in the final dump")
                continue
            present[(user, box)] = self.check_box(user, box, boxes[(user, box)])
        for user, box, uid, mid, where, how in self.acked_uid:
            p = present.get((user, box), {})
            if uid not in p and uid not in self.maybe_expunged[(user, box)]:
                self.violation(f"{user} {box}: UID {uid} ({mid}) {how} at "
                               f"{where} is gone, and no logged expunge or "
                               "move covers it", mid)
        present_mids = {key: set(p.values()) for key, p in present.items()}
        expunged_mids = {
            key: {self.mid_of.get((key[0], key[1], uid), (None,))[0]
                  for uid in uids}
            for key, uids in self.maybe_expunged.items()}
        for user, box, mid, where in self.acked_deliveries:
            key = (user, box)
            if mid not in present_mids.get(key, ()) and \
                    mid not in expunged_mids.get(key, ()):
                self.violation(f"{user} {box}: {mid} delivered at {where} "
                               "is gone, and no logged expunge or move "
                               "covers it", mid)
        for (user, box), uids in self.acked_expunged.items():
            p = present.get((user, box), {})
            for uid, where in sorted(uids.items()):
                if uid in p:
                    self.violation(f"{user} {box}: UID {uid} ({p[uid]}) "
                                   f"expunged at {where} is back", p[uid])

    # ---- processes --------------------------------------------------------

    def check_churn(self, boxes):
        """Mailboxes created, deleted and renamed during the run: their
        messages may legitimately vanish, so only this is proven: each
        message there is intact, was meant for a churn mailbox, and is
        there once (index check and STATUS are checked with the rest)."""
        seen = {}
        for (user, box), b in sorted(boxes.items()):
            if not box.startswith(CHURN_PREFIX):
                continue
            for uid, _modseq, _flags, mid, how in b["msgs"]:
                where = f"{user} {box} UID {uid}"
                if how != "ok":
                    self.violation(f"{where}: {mid}: {how}", mid,
                                   kind="final state")
                elif mid not in self.churn_mids:
                    self.violation(f"{where}: {mid} was never delivered to a "
                                   "churn mailbox", mid, kind="final state")
                elif mid in seen:
                    self.violation(f"{where}: {mid} is also {seen[mid]}", mid,
                                   kind="final state")
                seen.setdefault(mid, where)

    def check_processes(self, exits_path, segments, logs_dir):
        how = {}
        if exits_path:
            with open(exits_path, encoding="utf-8") as f:
                for raw in f:
                    p = raw.split()
                    if len(p) == 2:
                        how[p[0]] = p[1]
        for seg in segments:
            if seg == "init":
                continue
            end = how.get(seg, "unknown")
            if end == "killed":
                continue
            if end != "exit:0" or seg not in self.ended:
                tail = ""
                if logs_dir:
                    try:
                        with open(os.path.join(logs_dir, seg + ".err"),
                                  errors="replace") as f:
                            tail = "".join(f.readlines()[-15:])
                    except OSError:
                        pass
                self.violation(f"process {seg} ended with {end}"
                               f"{'' if seg in self.ended else ' before its deadline'}"
                               + (f"; its stderr ends:\n{tail}" if tail else ""),
                               kind="process")

    def check_work_done(self):
        for op in ("deliver", "append", "store", "expunge", "copy"):
            if self.acks[op] == 0:
                self.violation(f"no {op} succeeded in the whole run: the test"
                               " proved nothing about it", kind="process")

    # ---- report -------------------------------------------------------------

    def report(self, boxes):
        total = sum(len(b["msgs"]) for b in boxes.values())
        print(f"check-spool: {self.j.count} journal lines; acknowledged:"
              f" {dict(sorted(self.acks.items()))}; refused (TEMP):"
              f" {dict(sorted(self.store_temp.items()))}; unresolved intents "
              f"(killed mid-operation): {len(self.unresolved)}; final "
              f"messages: {total} in {len(boxes)} mailboxes")
        for seg, end in sorted(self.ended.items()):
            print(f"  {seg}: {end}")
        if not self.violations:
            print("check-spool: all invariants hold")
            return 0
        print(f"check-spool: {len(self.violations)} VIOLATIONS")
        kinds = collections.OrderedDict((k, []) for k in KIND_ORDER)
        for kind, text, tokens in self.violations:
            kinds.setdefault(kind, []).append((text, tokens))
        for kind, items in kinds.items():
            if items:
                print(f"  {kind}: {len(items)}")
        number = 0
        for kind, items in kinds.items():
            for text, tokens in items[:MAX_PER_KIND]:
                number += 1
                print(f"VIOLATION {number} [{kind}]: {text}")
                for token in tokens[:2]:
                    for line in self.j.mentioning(token):
                        print(line)
            if len(items) > MAX_PER_KIND:
                print(f"... and {len(items) - MAX_PER_KIND} more [{kind}]")
        return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--journals", required=True, help="directory of *.log")
    ap.add_argument("--dump", required=True, help="output of torture --dump")
    ap.add_argument("--exits", help="driver's 'segment how' lines")
    ap.add_argument("--logs", help="directory of SEGMENT.err files")
    args = ap.parse_args()

    journal = Journal()
    segments = journal.load(args.journals)
    checker = Checker(journal)
    checker.read_journals()
    checker.settle_deleted()
    boxes = checker.read_dump(args.dump)
    checker.check_final(boxes)
    checker.check_churn(boxes)
    checker.check_processes(args.exits, segments, args.logs)
    checker.check_work_done()
    return checker.report(boxes)


if __name__ == "__main__":
    sys.exit(main())
