#!/usr/bin/env bash
# The captured alignment under CUDA graphs (`--capture_alignment reduce-overhead`) at paper
# shapes and MiniLM's, after the fix that marks each step's start (issue #27, second call).
#
#     bash benchmarks/gpu_cuda_graphs.sh OUT_DIR [PYTHON]
source "$(dirname "$0")/gpu_common.sh"  # out, python, log, the environment, bench()
bench paper128-captured-cudagraphs 110 --setting paper-128 --capture_alignment reduce-overhead
bench minilm-captured-cudagraphs 80 --setting minilm --capture_alignment reduce-overhead
