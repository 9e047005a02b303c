"""Datasets: TFDS builders (array_record, read with `tfds.data_source`, no TensorFlow) for frozen
evaluation sets and oracle demonstrations of the envs (`envsets`), and the GSM8K-format
question/answer adapter (`qa`)."""

from rlx.data.envsets import (
                              EnvSetConfig,
                              RlxEnvEval,
                              RlxOracleDemos,
                              build,
                              load_demos,
                              load_eval_set,
                              read,
)
from rlx.data.qa import QaLocalConfig, QATask, RlxQaLocal, parse_answer, qa_prompts

__all__ = ["EnvSetConfig", "QATask", "QaLocalConfig", "RlxEnvEval", "RlxOracleDemos",
           "RlxQaLocal", "build", "load_demos", "load_eval_set", "parse_answer", "qa_prompts",
           "read"]
