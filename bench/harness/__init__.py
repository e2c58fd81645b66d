"""The harness the benchmarks and the tests share, by topic: bench/ scripts and tests/ both import from here, and
bench never imports tests (tests may import bench).

  processes    start a child process, wait until its URL answers, capture its log, stop it: the one launcher
  engine       the external inference engine (`transformers serve`) as a process
  versions     random LoRA versions registered as training jobs register them: a studio with a history
  hub_standin  a loopback stand-in for the Hugging Face Hub's HTTP API"""
