"""Datasets: a TFDS builder (array_record, read with `tfds.data_source`, no TensorFlow) of oracle
demonstrations of the envs (`envsets`), and the GSM8K-format question/answer adapter (`qa`)."""

from rlx.data.envsets import EnvSetConfig, RlxOracleDemos, build, load_demos, read
from rlx.data.qa import QaLocalConfig, QATask, RlxQaLocal, parse_answer, qa_prompts

__all__ = ["EnvSetConfig", "QATask", "QaLocalConfig", "RlxOracleDemos", "RlxQaLocal", "build",
           "load_demos", "parse_answer", "qa_prompts", "read"]
