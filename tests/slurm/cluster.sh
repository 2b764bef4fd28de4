#!/bin/bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (`make test-slurm`).
#   tests/slurm/cluster.sh start    install the Debian packages if missing, start munged, mariadbd +
#                                   slurmdbd (accounting: submitit polls job states with sacct), slurmctld
#                                   and slurmd; wait until the node is idle
#   tests/slurm/cluster.sh stop     stop exactly the daemons `start` started (their PIDs in $HAL_SLURM/pids/)
# No systemd, no cgroups. State, logs and configs live under $HAL_SLURM (default /tmp/hal-slurm);
# /etc/slurm/slurm.conf links to its slurm.conf, so sbatch/squeue/sacct need no SLURM_CONF.
# Partitions: `debug` (default, preemptable: PreemptMode=REQUEUE) and `high` (a job there requeues the debug
# jobs holding the CPUs it needs). HAL_SLURM_GRACE=N: preemption sends the job's --signal first and kills
# N s later (GraceTime=N, preempt_send_user_signal); unset: SLURM's default, SIGTERM then SIGKILL after KillWait.
set -euo pipefail
BASE=${HAL_SLURM:-/tmp/hal-slurm}
GRACE=${HAL_SLURM_GRACE:-}
DAEMONS="munged mariadbd slurmdbd slurmctld slurmd"
alive() { [ -f "$BASE/pids/$1.pid" ] && kill -0 "$(cat "$BASE/pids/$1.pid")" 2>/dev/null; }

stop() {
  for d in $(echo $DAEMONS | tr ' ' '\n' | tac); do
    f=$BASE/pids/$d.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && { echo "$d ($pid) still up after 10 s: SIGKILL"; kill -KILL "$pid"; }
      echo "stopped $d ($pid)"
    fi
    rm -f "$f"
  done
}

install() {  # the packages, once (minutes): slurm-wlm + munge; slurmdbd + mariadb for sacct
  command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && return
  echo "installing slurm-wlm munge slurmdbd slurm-wlm-mysql-plugin mariadb-server (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends slurm-wlm munge slurmdbd slurm-wlm-mysql-plugin mariadb-server >/dev/null
}

daemon() {  # daemon NAME COMMAND...: run in the foreground mode of the daemon, in the background; PID saved
  local name=$1; shift
  nohup "$@" < /dev/null > "$BASE/log/$name.stdout" 2>&1 &
  echo $! > "$BASE/pids/$name.pid"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local n=$(( $1 * 10 )) what=$2; shift 2
  for _ in $(seq $n); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: $what not up after $(( n / 10 )) s; logs in $BASE/log/" >&2; return 1
}

start() {
  install
  for d in $DAEMONS; do
    if alive $d; then echo "error: $d already runs (pid $(cat "$BASE/pids/$d.pid")): run '$0 stop' first" >&2; exit 1; fi
  done
  rm -rf "$BASE"/{state,spool}
  mkdir -p "$BASE"/{etc,state,spool/slurmd,log,pids,munge,mysql} /etc/slurm /run/munge
  chmod 755 "$BASE" "$BASE/munge" /run/munge
  trap 'echo "cluster start failed: logs in $BASE/log/; stopping what started" >&2; stop' ERR

  # munge: one key for every daemon and client on this one host
  [ -s "$BASE/munge/munge.key" ] || head -c 1024 /dev/urandom > "$BASE/munge/munge.key"
  chmod 400 "$BASE/munge/munge.key"
  local sock=/run/munge/munge.socket.2  # the default path: slurmctld, slurmdbd and sacct find it
  rm -f "$sock" "$sock.lock"
  daemon munged munged -F --force --key-file="$BASE/munge/munge.key" --socket="$sock" \
    --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/log/munged.log" --seed-file="$BASE/munge/seed"
  wait_for 5 munged test -S "$sock"
  munge -n | unmunge >/dev/null

  # accounting: mariadb (a fresh database every start), then slurmdbd
  local db=$BASE/mysql
  rm -rf "$db"/* && mariadb-install-db --no-defaults --user=root --datadir="$db/data" --skip-test-db \
    --auth-root-authentication-method=socket > "$BASE/log/mariadb-install.log" 2>&1
  daemon mariadbd mariadbd --no-defaults --user=root --datadir="$db/data" --socket="$db/sock" --port=3306 \
    --bind-address=127.0.0.1 --pid-file="$db/pid" --log-error="$BASE/log/mariadb.log" --innodb-buffer-pool-size=64M
  wait_for 30 mariadbd mariadb --no-defaults --socket="$db/sock" -u root -e 'select 1'
  mariadb --no-defaults --socket="$db/sock" -u root -e "
    CREATE USER 'slurm'@'localhost' IDENTIFIED BY 'hal'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'hal'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  cat > "$BASE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/pids/slurmdbd.own
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=hal
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$BASE/etc/slurmdbd.conf"
  SLURM_CONF=$BASE/etc/slurm.conf daemon slurmdbd slurmdbd -D
  wait_for 30 slurmdbd bash -c 'echo > /dev/tcp/127.0.0.1/6819'

  # slurm.conf: this machine is the one node (slurmd -C reads its CPUs and memory)
  local host preempt="" grace=""
  host=$(hostname -s)
  if [ -n "$GRACE" ]; then preempt="SlurmctldParameters=preempt_send_user_signal"; grace="GraceTime=$GRACE"; fi
  cat > "$BASE/etc/slurm.conf" <<CONF
ClusterName=hal
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire s before it may start again (default 120)
AuthInfo=cred_expire=10
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/slurmd
SlurmctldPidFile=$BASE/pids/slurmctld.own
SlurmdPidFile=$BASE/pids/slurmd.own
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$preempt
$(slurmd -C | head -1) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 OverSubscribe=NO $grace
PartitionName=high Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
CONF
  ln -sfn "$BASE/etc/slurm.conf" /etc/slurm/slurm.conf
  daemon slurmctld slurmctld -D -f "$BASE/etc/slurm.conf"
  daemon slurmd slurmd -D -f "$BASE/etc/slurm.conf"
  wait_for 120 "node $host (idle)" bash -c "sinfo -h -n $host -o %T | grep -qx idle"
  trap - ERR
  echo "SLURM up: $(sinfo -h -o '%P %D %c %T' | tr '\n' ';') pids $(cat "$BASE"/pids/*.pid | tr '\n' ' ')"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
