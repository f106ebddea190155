"""Tensors as TF-Serving answers them in protos: every value in its dtype's typed field."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# Tensor::AsProtoField's typed field per dtype (tensorflow/core/framework/tensor.cc, ProtoHelper).
PROTO_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val",  # their bits, as int32
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",  # real, imag, ...
}


def as_proto_field(array: np.ndarray) -> tensor_pb2.TensorProto:
    """The TensorProto TF-Serving's Predict answers with (Tensor::AsProtoField): dtype, shape and every
    value in the dtype's typed field (float_val, int64_val, string_val, ...), no tensor_content."""
    array = np.asarray(array)
    dtype = tf.as_dtype(array.dtype) if array.dtype != object else tf.string
    field = PROTO_FIELDS.get(dtype.as_datatype_enum)
    if field is None:  # no typed field for it (e.g. qint8): TensorFlow's own encoding
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    flat = array.reshape(-1)
    if field == "half_val":
        values = flat.view(np.uint16).tolist()
    elif field in ("scomplex_val", "dcomplex_val"):
        values = np.stack([flat.real, flat.imag], axis=-1).reshape(-1).tolist()
    elif field == "string_val":
        values = [value.encode() if isinstance(value, str) else bytes(value) for value in flat.tolist()]
    else:
        values = flat.tolist()
    getattr(proto, field).extend(values)
    return proto
