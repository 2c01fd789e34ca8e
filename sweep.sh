#!/usr/bin/env bash
# The optimizer comparison behind `make sweep`: one queued DVC experiment per optimizer, each
# with a learning rate that suits it on this problem, run two at a time. Every run lands in the
# one MLflow store at the repo root; compare the train runs in `make ui`.
set -euo pipefail
cd "$(dirname "$0")"

queue() {  # name, then -S overrides
  local name=$1
  shift
  dvc exp run --queue --name "$name" "$@"
}

queue sgd-nesterov -S train.optimizer=SGD -S train.lr=1.0e-6
queue rmsprop -S train.optimizer=RMSprop -S train.lr=1.0e-3
queue adam -S train.optimizer=Adam -S train.lr=1.0e-2
queue adamw -S train.optimizer=AdamW -S train.lr=1.0e-1
queue adagrad -S train.optimizer=Adagrad -S train.lr=1.0
queue lbfgs -S train.optimizer=LBFGS -S train.lr=1.0

dvc queue start --jobs "${JOBS:-2}"
# `dvc queue start` returns at once; wait until no experiment is queued or running.
# (Read the status into a variable: `grep -q` in a pipe would SIGPIPE dvc under pipefail.)
while status=$(dvc queue status) && grep -qE 'Queued|Running' <<<"$status"; do sleep 2; done
dvc queue status
dvc exp show --no-pager --drop '.*' --keep 'Experiment|rev|train.optimizer|train.lr$|final_loss|train_set.mse|gap_to_optimum'
