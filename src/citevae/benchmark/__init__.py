"""Benchmark: CITE-VAE beside the baselines on the same splits, seeds and metric code."""

from citevae.benchmark.evaluate import Evaluation, HeldOutUnit, prepare_evaluation
from citevae.benchmark.run import predict_units, run_split, summarise

__all__ = ["Evaluation", "HeldOutUnit", "predict_units", "prepare_evaluation", "run_split", "summarise"]
