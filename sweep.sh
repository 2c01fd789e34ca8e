#!/usr/bin/env bash
# The optimizer comparison behind `make sweep`: one DVC experiment per optimizer, each with a
# learning rate that suits it on this problem (one grid each, joined by --also), run on the
# local DVC queue with JOBS workers (default 2), or on a Dask cluster when
# DASK_SCHEDULER_ADDRESS is set (see docs/scale-out.md). Every run lands in the MLflow store;
# compare the train runs in `make ui`.
set -euo pipefail
cd "$(dirname "$0")"

polyfit sweep --name optim --jobs "${JOBS:-2}" \
  -S train.optimizer=SGD -S train.lr=1.0e-6 --also \
  -S train.optimizer=RMSprop -S train.lr=1.0e-3 --also \
  -S train.optimizer=Adam -S train.lr=1.0e-2 --also \
  -S train.optimizer=AdamW -S train.lr=1.0e-1 --also \
  -S train.optimizer=Adagrad -S train.lr=1.0 --also \
  -S train.optimizer=LBFGS -S train.lr=1.0 \
  "$@"
