"""Server-side batching, as TF-Serving's `--enable_batching --batching_parameters_file FILE`
(batching/batching_session.cc on TensorFlow's SharedBatchScheduler).

Concurrent calls of one signature of one model version, with the same outputs and inputs of the same
names, dtypes and non-batch dimensions, wait in one queue; the queue's open batch runs as one model
call, inputs joined along dimension 0 and outputs split back, when it reaches `max_batch_size` rows
or its first call has waited `batch_timeout_micros`. A call larger than `max_batch_size` is refused
as TF-Serving refuses it (`enable_large_batch_splitting` is not supported); a queue holding
`max_enqueued_batches` batches answers UNAVAILABLE. Where TF-Serving fails a whole batch, this server
runs each call of a failed batch alone, so that a bad request gets its own error and no other.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from grpc import StatusCode

from taxi_model.serving.errors import ConfigError, ServingError, invalid_argument


def _batching_parameters_class():
    """TF-Serving's BatchingParameters message (servables/tensorflow/session_bundle_config.proto, not in the
    tensorflow-serving-api wheel), built here so its text format parses as TF-Serving parses it."""
    file = descriptor_pb2.FileDescriptorProto(
        name="taxi_model/serving/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name, wrapper in [
        (1, "max_batch_size", "Int64Value"),
        (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"),
        (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
        (8, "enable_large_batch_splitting", "BoolValue"),
        (9, "max_execution_batch_size", "Int64Value"),
    ]:
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE, type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL)
    pool = descriptor_pool.Default()  # where wrappers.proto is
    return message_factory.GetMessages([file], pool=pool)["tensorflow.serving.BatchingParameters"]


BatchingParametersProto = _batching_parameters_class()


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """The parameters that apply here; the defaults are TF-Serving's (SharedBatchScheduler's QueueOptions)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()


def parse_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """A BatchingParameters text proto, checked; ConfigError on what TF-Serving refuses or this server lacks."""
    try:
        proto = text_format.Parse(text, BatchingParametersProto())
    except text_format.ParseError as e:
        raise ConfigError(f"Invalid protobuf file: '{source}': {e}") from e
    if proto.enable_large_batch_splitting.value or proto.pad_variable_length_inputs:
        raise ConfigError(f"{source}: enable_large_batch_splitting and pad_variable_length_inputs are not supported")
    defaults = BatchingParameters()
    parameters = BatchingParameters(
        **{
            name: getattr(proto, name).value if proto.HasField(name) else getattr(defaults, name)
            for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
        },
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
    )
    if min(parameters.max_batch_size, parameters.max_enqueued_batches, parameters.num_batch_threads) < 1:
        raise ConfigError(f"{source}: max_batch_size, max_enqueued_batches and num_batch_threads must be >= 1")
    if parameters.batch_timeout_micros < 0:
        raise ConfigError(f"{source}: batch_timeout_micros must be >= 0")
    sizes = parameters.allowed_batch_sizes
    if sizes and sizes[-1] != parameters.max_batch_size:  # TF-Serving's check and words
        raise ConfigError(
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
            f"{sizes[-1]}; expected {parameters.max_batch_size}"
        )
    if any(a >= b for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ConfigError("allowed_batch_sizes entries must be monotonically increasing")
    return parameters


def read_parameters(path: str) -> BatchingParameters:
    try:
        with open(path) as f:
            return parse_parameters(f.read(), path)
    except OSError as e:
        raise ConfigError(f"cannot read the batching parameters file: {e}") from e


Arrays = Mapping[str, np.ndarray]
ModelCall = Callable[[Arrays], dict[str, np.ndarray]]


def batch_size(inputs: Arrays) -> int:
    """The call's rows: the inputs' common dimension 0 (batching_util's ComputeTensorBatchSize)."""
    if not inputs:
        raise invalid_argument("Batching Run() must have at least one input tensor")
    if any(array.ndim == 0 for array in inputs.values()):
        raise invalid_argument("Batching Run() input tensors must have at least one dimension")
    sizes = {array.shape[0] for array in inputs.values()}
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


@dataclasses.dataclass
class _Task:
    inputs: Arrays
    size: int
    call: ModelCall
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None

    def run_alone(self) -> None:
        try:
            self.outputs = self.call(self.inputs)
        except Exception as e:  # re-raised in the request's thread
            self.error = e


@dataclasses.dataclass
class _Batch:
    opened: float  # time.monotonic() of its first task
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    size: int = 0
    closed: bool = False  # full, or followed by a newer batch: runs at once


class Batcher:
    """Joins concurrent model calls into batches, run by `num_batch_threads` threads."""

    def __init__(self, parameters: BatchingParameters):
        self.parameters = parameters
        self.model_calls = 0  # joined or alone: what the tests count
        self._queues: dict[tuple, collections.deque[_Batch]] = {}
        self._changed = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(parameters.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, key: tuple, inputs: Arrays, call: ModelCall) -> dict[str, np.ndarray]:
        """`call(inputs)`'s outputs, from a batch of calls of the same `key` (model version, signature,
        outputs); the inputs' names, dtypes and non-batch dimensions are added to it here."""
        size = batch_size(inputs)
        limit = self.parameters.max_batch_size
        if size > limit:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {limit}")
        key += tuple(
            (name, "string" if array.dtype.kind in "OSU" else array.dtype.str, array.shape[1:])
            for name, array in sorted(inputs.items())
        )
        task = _Task(inputs, size, call)
        with self._changed:
            if self._stopping:
                raise ServingError(StatusCode.UNAVAILABLE, "The server is stopping")
            queue = self._queues.setdefault(key, collections.deque())
            if not queue or queue[-1].closed or queue[-1].size + size > limit:
                if len(queue) >= self.parameters.max_enqueued_batches:
                    raise ServingError(
                        StatusCode.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full"
                    )
                if queue:
                    queue[-1].closed = True
                queue.append(_Batch(time.monotonic()))
            batch = queue[-1]
            batch.tasks.append(task)
            batch.size += size
            batch.closed = batch.size == limit
            self._changed.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._changed:
                batch = self._next_batch()
                if batch is None:
                    return
            try:
                self._run_batch(batch.tasks)
            finally:
                for task in batch.tasks:
                    task.done.set()

    def _next_batch(self) -> _Batch | None:
        """The oldest batch that is due (full, or waited its timeout; all when stopping), waiting for one;
        None once stopping with nothing queued."""
        timeout = self.parameters.batch_timeout_micros / 1e6
        while True:
            now, wait = time.monotonic(), None
            due = [
                (key, q[0])
                for key, q in self._queues.items()
                if self._stopping or q[0].closed or now - q[0].opened >= timeout
            ]
            if due:
                key, batch = min(due, key=lambda entry: entry[1].opened)
                self._queues[key].popleft()
                if not self._queues[key]:
                    del self._queues[key]  # no reference to an unloaded version stays
                return batch
            if self._stopping:
                return None
            if self._queues:
                wait = min(queue[0].opened for queue in self._queues.values()) + timeout - now
            self._changed.wait(wait)

    def _run_batch(self, tasks: list[_Task]) -> None:
        self._count_calls(1)
        if len(tasks) == 1:
            tasks[0].run_alone()
            return
        sizes = [task.size for task in tasks]
        total = sum(sizes)
        allowed = self.parameters.allowed_batch_sizes
        padding = allowed[bisect.bisect_left(allowed, total)] - total if allowed else 0
        try:
            # Padded with the last call's first row, as TF-Serving pads (a row known to be valid).
            joined = {
                name: np.concatenate([task.inputs[name] for task in tasks] + [tasks[-1].inputs[name][:1]] * padding)
                for name in tasks[0].inputs
            }
            outputs = tasks[0].call(joined)
        except Exception:
            outputs = None
        if outputs is None or any(array.ndim == 0 or array.shape[0] != total + padding for array in outputs.values()):
            # A bad call in the batch, or outputs not one per row: each call alone gets its own answer.
            self._count_calls(len(tasks))
            for task in tasks:
                task.run_alone()
            return
        bounds = np.cumsum(sizes)[:-1]
        parts = {name: np.split(array[:total], bounds) for name, array in outputs.items()}
        for i, task in enumerate(tasks):
            task.outputs = {name: split[i] for name, split in parts.items()}

    def _count_calls(self, calls: int) -> None:
        with self._changed:
            self.model_calls += calls
