#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for tests/test_slurm.py.
#
# Installs Debian's slurm-wlm and munge when missing, writes a minimal slurm.conf for
# this host (no accounting; MinJobAge long enough that squeue still lists finished jobs,
# which the Snakemake executor reads with --slurm-status-command squeue), starts munged,
# slurmctld and slurmd, and waits until sinfo shows the node idle. Needs root. Idempotent:
# a running cluster is left as it is. A slurm.conf that this script did not write belongs
# to another installation: it is never overwritten (exit 4, the test skips).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "start_cluster.sh: needs root" >&2
    exit 3
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

conf_dir=/etc/slurm
if [ -e "$conf_dir/slurm.conf" ] && ! grep -qx 'ClusterName=iclrepro-test' "$conf_dir/slurm.conf"; then
    echo "start_cluster.sh: $conf_dir/slurm.conf is another installation's; left as it is" >&2
    exit 4
fi

if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    exit 0
fi

host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > "$conf_dir/slurm.conf" <<CONF
ClusterName=iclrepro-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
MaxJobCount=100000
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 120); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    if echo "$state" | grep -qE '^(idle|mixed|allocated)'; then
        exit 0
    fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "start_cluster.sh: the node did not become idle; sinfo says: ${state:-nothing}" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
