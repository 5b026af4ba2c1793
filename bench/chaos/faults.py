"""The chaos soak's fault injector: carries out one scheduled fault (schedule.py) on the cluster or
on a processor slot, holds it, undoes it, and returns what happened with wall-clock times. After a
broker fault it waits until every partition has three in-sync replicas again, so the next fault
never finds a second broker effectively missing."""

import signal
import subprocess
import time

import kafka_io

REPLICATION_WAIT_S = 120


def inject(fault, cluster, processors, brokers):
    record = dict(fault)
    record["injected_at"] = time.time()
    kind = fault["kind"]
    try:
        if kind.startswith("processor_"):
            _processor_fault(fault, processors, record)
        else:
            _broker_fault(fault, cluster, record)
            waited = kafka_io.wait_fully_replicated(brokers, REPLICATION_WAIT_S)
            record["replicated_after_s"] = None if waited is None else round(waited, 1)
    except Exception as error:  # noqa: BLE001 (a fault that could not be carried out is reported)
        record["error"] = repr(error)[:500]
    record["undone_at"] = time.time()
    return record


def _processor_fault(fault, processors, record):
    index, kind, hold = fault["instance"], fault["kind"], fault["hold_s"]
    slot = processors.hold(index)
    try:
        record["target_was_running"] = slot.alive()
        if not slot.alive():
            time.sleep(hold)
            return
        record["pid"] = slot.process.pid
        if kind == "processor_pause":
            slot.signal(signal.SIGSTOP)
            time.sleep(hold)
            slot.signal(signal.SIGCONT)
            return
        if kind == "processor_sigterm":
            slot.signal(signal.SIGTERM)
            try:
                slot.process.wait(30)
            except subprocess.TimeoutExpired:
                record["needed_kill9"] = True
                slot.signal(signal.SIGKILL)
                slot.process.wait(10)
        else:
            slot.signal(signal.SIGKILL)
            slot.process.wait(10)
        slot.note_exit("fault")
        record["exit_code"] = slot.process.returncode
        if kind == "processor_kill9_wipe":
            slot.wipe()
        time.sleep(hold)
    finally:
        processors.release(index, restart=kind != "processor_pause")


def _broker_fault(fault, cluster, record):
    kind, hold = fault["kind"], fault["hold_s"]
    if kind == "broker_pause":
        cluster.command("pause", fault["broker"])
        try:
            time.sleep(hold)
        finally:
            cluster.command("resume", fault["broker"])
        return
    nodes = fault["brokers"] if kind == "two_brokers_down" else [fault["broker"]]
    try:
        for node in nodes:
            cluster.command("kill", node)
        record["down_at"] = time.time()
        time.sleep(hold)
    finally:
        started = time.time()
        for node in nodes:
            cluster.command("start", node)
        record["restart_s"] = round(time.time() - started, 1)
