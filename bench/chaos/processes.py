"""The chaos soak's processes: the cluster (through scripts/kafka-cluster), the `streamagg run`
instances (one slot each, restarted like Kubernetes restarts a pod), the `streamagg produce`
generator, and the resident-memory sampler. Every process is started here, signalled by its own pid
and stopped here."""

import os
import shutil
import signal
import subprocess
import threading
import time


def run_checked(args, timeout_s):
    """Runs a command to completion; raises with its stderr if it fails or outlives timeout_s."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done.stdout


class Cluster:
    def __init__(self, script):
        self.script = script

    def command(self, *args, timeout_s=180):
        return run_checked([self.script, *map(str, args)], timeout_s)

    def running(self):
        return subprocess.run([self.script, "status"], capture_output=True).returncode == 0

    def brokers(self):
        for line in self.command("env").splitlines():
            if line.startswith("export STREAMAGG_TEST_CLUSTER_BROKERS="):
                return line.split("=", 1)[1].strip()
        raise RuntimeError("scripts/kafka-cluster env named no brokers")


def stop_process(process, timeout_s=30):
    """SIGTERM (and SIGCONT, in case it is frozen), then SIGKILL after timeout_s; returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


class Slot:
    """One processor instance: its state dir, its log, its current process and what happened to it."""

    def __init__(self, index, command, state_dir, log_dir):
        self.index, self.command, self.state_dir = index, command, state_dir
        self.log_path = os.path.join(log_dir, f"processor-{index}.log")
        self.process = None
        self.held = False  # a fault owns it: the supervisor must not restart it
        self.exits = []  # {"pid", "code", "cause": fault | by_itself | end_of_soak, "at"}
        self.restarts_unexpected = 0
        self.backoff_s = 1.0
        self.next_start = 0.0
        self.started_at = 0.0
        self.last_sample = 0.0
        self.lifetimes = {}  # pid -> [(wall s, rss MiB)]

    def start(self):
        log = open(self.log_path, "a")
        log.write(f"\n==== chaos soak: starting instance {self.index} at {time.strftime('%H:%M:%S')} ====\n")
        log.flush()
        self.process = subprocess.Popen(self.command + ["--state-dir", self.state_dir], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.lifetimes[self.process.pid] = []
        self.started_at = time.time()

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def exit_noted(self):
        return bool(self.exits) and self.exits[-1]["pid"] == self.process.pid

    def sample_rss(self, now, every_s=2.0):
        if not self.alive() or now - self.last_sample < every_s:
            return
        self.last_sample = now
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.lifetimes[self.process.pid].append((now, int(line.split()[1]) / 1024.0))
        except OSError:
            pass

    def note_exit(self, cause):
        code = self.process.returncode
        self.exits.append({"pid": self.process.pid, "code": code, "cause": cause, "at": time.time()})

    def signal(self, sig):
        if self.alive():
            os.kill(self.process.pid, sig)

    def wipe(self):
        shutil.rmtree(self.state_dir, ignore_errors=True)


class Processors:
    """The slots, and the supervisor that restarts an instance that exited by itself (with backoff
    from 1 s doubling to 10 s, as Kubernetes' CrashLoopBackOff does, capped lower)."""

    def __init__(self, slots):
        self.slots = slots
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._supervise, daemon=True, name="supervisor")

    def start(self):
        for slot in self.slots:
            slot.start()
        self.thread.start()

    def _supervise(self):
        while not self.stop.wait(0.5):
            now = time.time()
            with self.lock:
                for slot in self.slots:
                    slot.sample_rss(now)
                    if slot.held or slot.process is None:
                        continue
                    if slot.alive():
                        if now - slot.started_at > 60:
                            slot.backoff_s = 1.0  # up for a minute: the crash loop is over
                        continue
                    if not slot.exit_noted():
                        slot.note_exit("by_itself")
                        slot.restarts_unexpected += 1
                        slot.next_start = now + slot.backoff_s
                        slot.backoff_s = min(10.0, slot.backoff_s * 2)
                    if now >= slot.next_start:
                        slot.start()

    def hold(self, index):
        """Takes a slot away from the supervisor (a fault is about to act on it)."""
        with self.lock:
            slot = self.slots[index]
            slot.held = True
            return slot

    def release(self, index, restart):
        with self.lock:
            slot = self.slots[index]
            if restart and not slot.alive():
                if slot.process is not None and not slot.exit_noted():
                    slot.note_exit("by_itself")
                slot.start()
            slot.held = False

    def stop_all(self):
        self.stop.set()
        if self.thread.ident is not None:
            self.thread.join(10)
        codes = []
        for slot in self.slots:
            if slot.process is None:
                continue
            if not slot.alive() and not slot.exit_noted():
                slot.note_exit("by_itself")
            if slot.alive():
                codes.append(stop_process(slot.process))
                slot.note_exit("end_of_soak")
        return codes


class Generator:
    """`streamagg produce --rate`: wall-clock event times, out-of-order, a fraction late. Restarted
    (with the next seed) if it exits by itself; every restart is recorded."""

    def __init__(self, command, log_dir):
        self.command = command
        self.log_path = os.path.join(log_dir, "generator.log")
        self.process = None
        self.exits = []
        self.seed_bump = 0

    def start(self):
        log = open(self.log_path, "a")
        args = list(self.command)
        seed_at = args.index("--seed") + 1
        args[seed_at] = str(int(args[seed_at]) + self.seed_bump)
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def keep_running(self):
        if self.process.poll() is not None:
            self.exits.append({"code": self.process.returncode, "at": time.time()})
            self.seed_bump += 1
            self.start()

    def stop(self):
        return stop_process(self.process, timeout_s=90)
