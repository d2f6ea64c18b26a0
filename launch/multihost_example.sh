#!/usr/bin/env bash
# Multi-host training: the same command on every host, with --config.mesh.distributed=True.
#
# A 2-host job: start this script on both hosts, each with its own process id and the address
# of host 0 (any free port), from the repository root:
#
#   host0$ launch/multihost_example.sh 0 host0:1234
#   host1$ launch/multihost_example.sh 1 host0:1234
#
# or both from one machine over ssh:
#
#   ssh host0 'cd sine_jax && launch/multihost_example.sh 0 host0:1234' &
#   ssh host1 'cd sine_jax && launch/multihost_example.sh 1 host0:1234' &
#   wait
#
# Arguments after the first two are passed on (e.g. --workdir=..., --config.train.batch_size=...).
# sine_jax.main calls jax.distributed.initialize() before it looks at any device; JAX reads
# JAX_COORDINATOR_ADDRESS, and sine_jax passes on JAX_NUM_PROCESSES and JAX_PROCESS_ID. Every
# process then sees all hosts' GPUs as one mesh: train.batch_size is the global batch (divisible
# by the total number of GPUs); each host reads the same data file but batches only its own
# rows of every global batch (B / number of hosts) and sends them to its own GPUs.
# WORKDIR must be on a file system all hosts share: process 0 writes the workdir's files and
# holds its lock, every process writes its part of the checkpoints. An error in one process
# ends every process within seconds with its one-line message; a run resumes with the same
# number of processes.
#
# Under SLURM (or Open MPI), JAX detects the coordinator, the process count and the id itself:
# leave the three variables unset and start one process per host, e.g.
#
#   srun --nodes=2 --ntasks-per-node=1 python -m sine_jax.main --config=configs/movielens.py \
#       --workdir=/shared/runs/ml1m_2hosts --config.data.path=/shared/data/ml-1m/ratings.dat \
#       --config.mesh.distributed=True
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 PROCESS_ID COORDINATOR_HOST:PORT [sine_jax.main flags ...]" >&2
  exit 2
fi
export JAX_PROCESS_ID="$1"
export JAX_COORDINATOR_ADDRESS="$2"
export JAX_NUM_PROCESSES="${JAX_NUM_PROCESSES:-2}"
shift 2

exec python -m sine_jax.main --config=configs/movielens.py \
    --workdir="${WORKDIR:-/shared/runs/ml1m_2hosts}" \
    --config.data.path="${DATA:-/shared/data/ml-1m/ratings.dat}" \
    --config.mesh.distributed=True "$@"
