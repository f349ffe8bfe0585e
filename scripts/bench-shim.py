#!/usr/bin/env python3
"""The containerd shim's own overhead: time to first output and to exit of

  A  ctr run --runtime io.containerd.smartvm.v2 (the probe stand-in, one line, exit 3)
  B  ctr run with runc's shim (a static binary printing one line, exit 3)
  C  smartvm run (the same probe, no containerd)

interleaved A B C per round against a private containerd (own config, root, state and socket
under /dev/shm; never the host's). Both ctr runs use `--rootfs DIR` (no snapshot to unpack),
so the figures are the runtimes' own paths. Prints medians and spreads, and with --json one
JSON object.

  scripts/bench-shim.py [--runs N] [--json]     # after `cargo build` (target/debug)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary(name):
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, name)
        if os.path.exists(path):
            return path
    raise SystemExit(f"{name} is not built: cargo build --workspace")


def static_hello(workdir):
    source = os.path.join(workdir, "hello.rs")
    with open(source, "w") as f:
        f.write('fn main() { println!("hello from runc"); std::process::exit(3); }\n')
    rootfs = os.path.join(workdir, "rootfs")
    os.makedirs(rootfs)
    subprocess.run(["rustc", "-C", "target-feature=+crt-static", "-O", "-o",
                    os.path.join(rootfs, "hello"), source], check=True)
    return rootfs


def start_containerd(workdir, env):
    config = os.path.join(workdir, "config.toml")
    sock = os.path.join(workdir, "containerd.sock")
    with open(config, "w") as f:
        f.write(f'version = 2\nroot = "{workdir}/root"\nstate = "{workdir}/state"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
                f'[debug]\n  address = "{workdir}/debug.sock"\n')
    log = open(os.path.join(workdir, "containerd.log"), "w")
    proc = subprocess.Popen(["containerd", "--config", config], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while subprocess.run(["ctr", "--address", sock, "version"], env=env,
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("containerd did not come up")
        time.sleep(0.05)
    return proc, sock


def timed(argv, env, expect):
    """(seconds to the first output line, seconds to exit) of one run."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = None
    for line in proc.stdout:
        if first is None and expect in line.decode(errors="replace"):
            first = time.monotonic() - start
    proc.wait()
    end = time.monotonic() - start
    if first is None or proc.returncode != 3:
        raise SystemExit(f"{argv}: exit {proc.returncode}, no {expect!r}: {proc.stderr.read().decode()}")
    return first, end


def summary(values):
    ms = sorted(v * 1000 for v in values)
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(ms[0], 1), "max_ms": round(ms[-1], 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="svbench", dir="/dev/shm")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(binary("containerd-shim-smartvm-v2")) + ":" + env.get("PATH", "")
    env.setdefault("SMARTVM_RUNTIME_DIR", os.path.join(workdir, "run"))
    env.setdefault("SMARTVM_DATA_DIR", os.path.join(workdir, "data"))
    if "SMARTVM_FIRECRACKER_BIN" not in env:
        env["SMARTVM_FIRECRACKER_BIN"] = "/var/lib/smartvm/bin/v1.12.1/firecracker"
    rootfs = static_hello(workdir)
    containerd, sock = start_containerd(workdir, env)
    ctr = ["ctr", "--address", sock, "run", "--rm", "--rootfs"]
    commands = {
        "shim": (ctr + ["--runtime", "io.containerd.smartvm.v2", "--annotation", "io.smartvm.guest=probe",
                        rootfs, "bench-a", "probe.lines=1", "probe.exit=3"], "smartvm-probe line n=0"),
        "runc": (ctr + [rootfs, "bench-b", "/hello"], "hello from runc"),
        "smartvm_run": ([binary("smartvm"), "run", "--boot-args", "console=ttyS0 probe.lines=1 probe.exit=3"],
                        "smartvm-probe line n=0"),
    }
    results = {name: ([], []) for name in commands}
    try:
        for argv, expect in commands.values():  # warm-up: caches, the probe kernel's install
            timed(argv, env, expect)
        for _ in range(args.runs):
            for name, (argv, expect) in commands.items():
                first, end = timed(argv, env, expect)
                results[name][0].append(first)
                results[name][1].append(end)
    finally:
        containerd.terminate()
        containerd.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"runs": args.runs, "loadavg": os.getloadavg()[0]}
    for name, (firsts, ends) in results.items():
        report[name] = {"first_output": summary(firsts), "exit": summary(ends)}
    shim, runc, run = (statistics.median(results[n][1]) for n in ("shim", "runc", "smartvm_run"))
    report["shim_over_smartvm_run_ms"] = round((shim - run) * 1000, 1)
    report["shim_over_runc_ms"] = round((shim - runc) * 1000, 1)
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.runs} rounds, interleaved; load average {report['loadavg']:.2f}")
    for name in commands:
        r = report[name]
        print(f"  {name:12} first output {r['first_output']['median_ms']:7.1f} ms "
              f"({r['first_output']['min_ms']}-{r['first_output']['max_ms']})   "
              f"exit {r['exit']['median_ms']:7.1f} ms ({r['exit']['min_ms']}-{r['exit']['max_ms']})")
    print(f"  the shim's own cost (median exit): +{report['shim_over_smartvm_run_ms']} ms over smartvm run, "
          f"{report['shim_over_runc_ms']:+} ms vs runc")


if __name__ == "__main__":
    main()
