#!/usr/bin/env bash
# Stop the cluster that tests/slurm/start-cluster.sh started: only the processes whose pids it
# recorded under $LABRUNNER_SLURM_DIR (default /tmp/labrunner-slurm), and only while each pid
# still belongs to the daemon it was recorded for, after cancelling the jobs still in its queue;
# then the link /etc/slurm/slurm.conf it made.
# The folder is kept (logs); SLURM jobs still running die with slurmd.
set -euo pipefail

DIR=${LABRUNNER_SLURM_DIR:-/tmp/labrunner-slurm}
SYSTEM_CONF=/etc/slurm/slurm.conf
STOP_WAIT_S=10
CANCEL_WAIT_S=40

say() { echo "slurm-cluster: $*"; }

stop() {  # stop PIDFILE NAME
    local pid
    if [[ ! -s $1 ]]; then
        return
    fi
    pid=$(<"$1")
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$2" ]]; then
        say "$2 (pid $pid) is not running"
        rm -f "$1"
        return
    fi
    kill -TERM "$pid"
    for _ in $(seq $((STOP_WAIT_S * 10))); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        say "$2 (pid $pid) did not stop within ${STOP_WAIT_S}s of SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
    say "stopped $2 (pid $pid)"
}

cancel_jobs() {  # jobs still queued or running would outlive slurmd (their slurmstepd stays)
    local jobs
    [[ -s $DIR/slurmctld.pid && $(cat "/proc/$(<"$DIR/slurmctld.pid")/comm" 2>/dev/null) == slurmctld ]] || return 0
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    [[ -n ${jobs// /} ]] || return 0
    say "cancelling jobs $jobs"
    scancel $jobs || true
    for _ in $(seq $((CANCEL_WAIT_S * 10))); do  # SIGTERM, then SIGKILL after KillWait (30 s)
        [[ -z $(squeue -h -o %i 2>/dev/null) ]] && return 0
        sleep 0.1
    done
    say "jobs still listed after ${CANCEL_WAIT_S}s: $(squeue -h -o %i | tr '\n' ' ')"
}

cancel_jobs
stop "$DIR/slurmd.pid" slurmd
stop "$DIR/slurmctld.pid" slurmctld
stop "$DIR/munge/munged.pid" munged
if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$DIR/slurm.conf" ]]; then
    rm -f "$SYSTEM_CONF"
    say "removed the link $SYSTEM_CONF"
fi
