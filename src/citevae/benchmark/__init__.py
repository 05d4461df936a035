"""Benchmark: CITE-VAE beside the baselines on the same splits, seeds and metric code."""

from citevae.benchmark.celleval import cell_eval_inputs, run_cell_eval, write_cell_eval
from citevae.benchmark.evaluate import Evaluation, HeldOutUnit, prepare_evaluation
from citevae.benchmark.run import predict_units, run_split, summarise

__all__ = ["Evaluation", "HeldOutUnit", "cell_eval_inputs", "predict_units", "prepare_evaluation",
           "run_cell_eval", "run_split", "summarise", "write_cell_eval"]
