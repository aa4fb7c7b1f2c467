#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""uhmm-stat against real processes (issue 20).

    stat-test.py CASE UHMM_STAT STAT_WORKLOAD

CASE: live      a workload that migrated part of a range: --once --json is
                valid JSON whose device bytes are what it migrated; the text
                forms and the list work; after its destroy the pid publishes
                nothing (3), after its exit it is gone (2)
      not_uhmm  a process without uhmm: a clear message, exit 3
      dead      a pid that exited: exit 2; a segment it left behind (a
                crash) is not listed and is removed by the reader
      disabled  UHMM_STAT=0 and UHMM_CTX_NO_STAT: nothing published (3)
      png       --png FILE --seconds N draws a PNG (77: skipped without
                gnuplot, saying so)
Each case publishes into a directory of its own (UHMM_STAT_DIR).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CASE, STAT, WORKLOAD = sys.argv[1], sys.argv[2], sys.argv[3]
DIR = tempfile.mkdtemp(prefix="uhmm-stat-test-")
os.environ["UHMM_STAT_DIR"] = DIR
os.environ["UHMM_STAT_MS"] = "20"


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def stat(*args, env=None):
    r = subprocess.run([STAT, *args], capture_output=True, text=True, timeout=30,
                       env=env)
    print("$ uhmm-stat", " ".join(args), "->", r.returncode)
    print(r.stdout[:3000], r.stderr, sep="", end="")
    return r


def start(*args, env=None):
    p = subprocess.Popen([WORKLOAD, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline().split()
    if not line or line[0] != "ready":
        p.kill()
        fail("the workload did not start: %r" % line)
    return p, line


def step(p, want):
    p.stdin.write("go\n")
    p.stdin.flush()
    line = p.stdout.readline().strip()
    if line != want:
        fail("workload said %r, not %r" % (line, want))


def finish(p):
    p.stdin.close()
    if p.wait(timeout=30) != 0:
        fail("the workload failed (%d)" % p.returncode)


def case_live():
    p, (_, pid, dev, start_, rbytes, moved) = start("--mib", "8", "--dev-mib", "32")
    dev, start_, rbytes, moved = int(dev), int(start_, 16), int(rbytes), int(moved)
    r = stat(pid, "--once", "--json")
    if r.returncode != 0:
        fail("--once --json exit %d" % r.returncode)
    j = json.loads(r.stdout)
    if j["pid"] != int(pid) or len(j["contexts"]) != 1:
        fail("pid or contexts: %r" % j)
    c = j["contexts"][0]
    if c["format_version"] != 1 or c["rates"] is not None:
        fail("version or rates of one sample")
    devs = {d["id"]: d for d in c["devices"]}
    if dev not in devs or devs[dev]["bytes_in_use"] != moved or devs[dev]["mem_bytes"] != 32 << 20:
        fail("device %d: %r (migrated %d)" % (dev, c["devices"], moved))
    rg = [x for x in c["ranges"] if int(x["start"], 16) == start_]
    if len(rg) != 1 or rg[0]["bytes"] != rbytes:
        fail("range at %#x: %r" % (start_, c["ranges"]))
    rg = rg[0]
    if rg["devices"][str(dev)] != moved or rg["cpu_bytes"] != rbytes - moved:
        fail("range residency %r" % rg)
    if c["counters"]["migrated_to_device_bytes"] < moved or c["counters"]["cpu_faults"] < 0:
        fail("counters %r" % c["counters"])
    if c["ranges_total"] != 1 or c["devices_total"] != 1:
        fail("totals")
    # The text forms: one sample, and the list.
    r = stat(pid, "--once")
    if r.returncode != 0 or "simdev" not in r.stdout or "[" not in r.stdout:
        fail("--once text")
    r = stat("--json")
    if r.returncode != 0 or int(pid) not in [x["pid"] for x in json.loads(r.stdout)]:
        fail("the list does not show %s" % pid)
    r = stat()
    if r.returncode != 0 or pid not in r.stdout:
        fail("the text list")
    # The live view (not a terminal: one JSON line a sample), stopped by
    # SIGINT after a few samples: the later ones have rates.
    v = subprocess.Popen([STAT, pid, "--json", "--interval", "0.1"],
                         stdout=subprocess.PIPE, text=True)
    samples = [json.loads(v.stdout.readline()) for _ in range(3)]
    v.send_signal(2)
    v.stdout.read()
    if v.wait(timeout=10) != 0 or samples[2]["contexts"][0]["rates"] is None:
        fail("the live view's samples: %r" % samples[2]["contexts"][0]["rates"])
    step(p, "destroyed")
    if any(n.startswith(pid + ".") for n in os.listdir(DIR)):
        fail("the segment outlived the context: %r" % os.listdir(DIR))
    r = stat(pid, "--once")
    if r.returncode != 3 or "publishes no uhmm context" not in r.stderr:
        fail("a destroyed context: exit %d" % r.returncode)
    finish(p)
    r = stat(pid, "--once")
    if r.returncode != 2 or "no process" not in r.stderr:
        fail("an exited process: exit %d" % r.returncode)


def case_not_uhmm():
    p = subprocess.Popen(["sleep", "20"])
    try:
        r = stat(str(p.pid), "--once", "--json")
        if r.returncode != 3 or "publishes no uhmm context" not in r.stderr or r.stdout:
            fail("a process without uhmm: exit %d" % r.returncode)
        r = stat(str(p.pid))
        if r.returncode != 3:
            fail("the live view of a process without uhmm: exit %d" % r.returncode)
    finally:
        p.kill()
        p.wait()


def case_dead():
    p = subprocess.Popen(["true"])
    p.wait()
    r = stat(str(p.pid), "--once", "--json")
    if r.returncode != 2 or "no process" not in r.stderr:
        fail("a dead pid: exit %d" % r.returncode)
    # A segment a crashed process left: copy a live one under the dead pid.
    w, (_, pid, *_rest) = start()
    seg = [n for n in os.listdir(DIR) if n.startswith(pid + ".")]
    if len(seg) != 1:
        fail("no segment of the workload: %r" % os.listdir(DIR))
    stale = os.path.join(DIR, "%d.1" % p.pid)
    with open(os.path.join(DIR, seg[0]), "rb") as f:
        image = f.read()
    with open(stale, "wb") as g:
        g.write(image)
    # (its pid field is the workload's: the name says the dead pid)
    r = stat("--json")
    if r.returncode != 0 or p.pid in [x["pid"] for x in json.loads(r.stdout)]:
        fail("a stale segment was listed")
    if os.path.exists(stale):
        fail("the segment of a dead pid was not removed")
    step(w, "destroyed")
    finish(w)
    # The workload's own segment, had it crashed, would be stale now too:
    # a copy of it under its pid, then a listing: removed.
    stale2 = os.path.join(DIR, "%s.7" % pid)
    with open(stale2, "wb") as g:
        g.write(image)
    os.chmod(stale2, 0o600)
    r = stat()
    if r.returncode != 0 or os.path.exists(stale2):
        fail("a dead process's segment was not removed: %r" % os.listdir(DIR))
    r = stat(pid, "--once")
    if r.returncode != 2:
        fail("a dead process with a stale segment: exit %d" % r.returncode)
    # A process that exec'd: alive, same pid and start time, but the
    # segment is no longer its (nobody rewrites it).  Once it is older
    # than a second plus two periods, it is found out and removed.
    w, (_, pid, *_rest) = start("--exec")
    w.stdin.write("go\n")
    w.stdin.flush()
    time.sleep(1.5)  # a lower bound only: the segment can only age
    try:
        r = stat(pid, "--once")
        if r.returncode != 3 or any(n.startswith(pid + ".") for n in os.listdir(DIR)):
            fail("the segment of a process that exec'd: exit %d, %r" % (r.returncode,
                                                                      os.listdir(DIR)))
    finally:
        w.kill()
        w.wait()


def case_disabled():
    env = dict(os.environ, UHMM_STAT="0")
    p, line = start(env=env)
    if line[2:] != ["nostat"] or os.listdir(DIR):
        fail("UHMM_STAT=0 published: %r %r" % (line, os.listdir(DIR)))
    r = stat(line[1], "--once", "--json")
    if r.returncode != 3:
        fail("UHMM_STAT=0: exit %d" % r.returncode)
    step(p, "destroyed")
    finish(p)
    p, line = start("--no-stat")
    if line[2:] != ["nostat"] or os.listdir(DIR):
        fail("UHMM_CTX_NO_STAT published")
    step(p, "destroyed")
    finish(p)


def case_png():
    if not shutil.which("gnuplot"):
        print("SKIP: gnuplot not found: --png cannot draw")
        sys.exit(77)
    p, (_, pid, *_rest) = start()
    out = os.path.join(DIR, "stat.png")
    r = stat(pid, "--png", out, "--seconds", "0.6", "--interval", "0.2")
    step(p, "destroyed")
    finish(p)
    if r.returncode != 0:
        fail("--png exit %d" % r.returncode)
    with open(out, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            fail("not a PNG")
    os.unlink(out)


try:
    {"live": case_live, "not_uhmm": case_not_uhmm, "dead": case_dead,
     "disabled": case_disabled, "png": case_png}[CASE]()
    print("PASS")
finally:
    shutil.rmtree(DIR, ignore_errors=True)
