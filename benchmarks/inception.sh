#!/bin/bash
# BENCHMARKS.md section 44: benchmarks/cat_net.sh on the small Inception network.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench/inception_bench bash benchmarks/inception.sh
exec bash "$(dirname "$0")/cat_net.sh" inception
