"""TF Serving's JSON for tensors, both ways (tensorflow.org/tfx/serving/api_rest).

A `predict` request gives a signature's inputs in one of two formats:
- row format, `{"instances": [...]}`: one item per row, each an object of named inputs (or the
  bare value when the signature has one input). TF Serving needs every input to have the same
  0-th dimension; here an input without one (a scalar such as `length`) may appear in every
  row, with the same value in all of them.
- columnar format, `{"inputs": {...}}`: each input whole (or the bare value for one input).
Binary strings come as `{"b64": "..."}`. The answer mirrors the request: `{"predictions":
[...]}` (one item per row) or `{"outputs": ...}`, an output's name dropped when there is only
one; outputs whose names end in `_bytes` go back as `{"b64": ...}`.

Every problem is a `RequestError` whose message names the field, turned into a 400 answer.
"""

import base64
import binascii

import numpy as np

NUMPY_TYPES = {
    "string": object,
    "int32": np.int32,
    "int64": np.int64,
    "float32": np.float32,
    "float64": np.float64,
    "bool": np.bool_,
    "uint8": np.uint8,
}


class RequestError(ValueError):
    """A bad request: the message names the field and what is allowed. `status` is the HTTP
    status code it is answered with."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def decode_strings(value, field):
    """Nested lists of str / {"b64": ...} -> the same nesting of bytes."""
    if isinstance(value, list):
        return [decode_strings(item, field) for item in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise RequestError(f'{field}: a binary value is {{"b64": "<base64>"}}, got {value}')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestError(f"{field}: not valid base64 ({error})") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise RequestError(f"{field}: expected a string, got {type(value).__name__} {value!r}")


def to_array(value, spec, field):
    """A JSON value -> a numpy array of the input `spec` ({"dtype", "shape"}), checked."""
    dtype, shape = spec["dtype"], spec["shape"]
    if dtype == "string":
        array = np.array(decode_strings(value, field), dtype=object)
    else:
        if not is_numeric(value, dtype):
            kind = "true or false" if dtype == "bool" else "numbers"
            raise RequestError(f"{field}: expected {dtype} ({kind}), got {short(value)}")
        try:
            array = np.array(value, dtype=NUMPY_TYPES[dtype])
        except (ValueError, TypeError, OverflowError) as error:
            raise RequestError(f"{field}: not a {dtype} tensor ({error})") from None
    if array.ndim != len(shape) or any(
        size is not None and size != actual for size, actual in zip(shape, array.shape)
    ):
        raise RequestError(
            f"{field}: expected shape {shape_text(shape)} ({dtype}), got {list(array.shape)}"
        )
    return array


def is_numeric(value, dtype):
    if isinstance(value, list):
        return all(is_numeric(item, dtype) for item in value)
    if dtype == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return dtype.startswith("float") or float(value).is_integer()


def shape_text(shape):
    return "[" + ", ".join("B" if size is None else str(size) for size in shape) + "]"


def short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_predict(body, specs, defaults):
    """A predict request body (parsed JSON) -> (inputs: name -> numpy array, row format?, the
    names the request gave itself).

    `specs`: the signature's inputs, name -> {"dtype", "shape"} (None for an unknown size).
    `defaults`: values for inputs a request may leave out (the model's serving_defaults)."""
    if not isinstance(body, dict):
        raise RequestError('the body must be a JSON object with "instances" or "inputs"')
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise RequestError(
            'give exactly one of "instances" (row format) or "inputs" (columnar format)'
        )
    if has_rows:
        columns = rows_to_columns(body["instances"], specs)
    else:
        columns = body["inputs"]
        if len(specs) == 1 and not (isinstance(columns, dict) and set(columns) <= set(specs)):
            columns = {next(iter(specs)): columns}
        if not isinstance(columns, dict):
            raise RequestError('"inputs" must be an object of named inputs')
    unknown = sorted(set(columns) - set(specs))
    if unknown:
        raise RequestError(
            f"unknown input {', '.join(unknown)}; this signature takes {', '.join(specs) or 'none'}"
        )
    inputs = {}
    for name, spec in specs.items():
        if name in columns:
            inputs[name] = to_array(columns[name], spec, name)
        elif name in defaults:
            inputs[name] = default_array(defaults[name], spec, columns, specs)
        else:
            raise RequestError(
                f"missing input {name} ({spec['dtype']} {shape_text(spec['shape'])})"
            )
    return inputs, has_rows, set(columns)


def default_array(value, spec, columns, specs):
    """A default for a left-out input: a scalar as it is, a batched one repeated per row."""
    if not spec["shape"]:
        return np.array(value, dtype=NUMPY_TYPES[spec["dtype"]])
    rows = batch_size(columns, specs)
    if spec["dtype"] == "string":
        return np.array([str(value).encode()] * rows, dtype=object)
    return np.full([rows], value, dtype=NUMPY_TYPES[spec["dtype"]])


def batch_size(columns, specs):
    for name, value in columns.items():
        if specs[name]["shape"] and specs[name]["shape"][0] is None and isinstance(value, list):
            return len(value)
    return 1


def rows_to_columns(instances, specs):
    """Row format -> columns. A scalar input (no 0-th dimension) must be equal in every row."""
    if not isinstance(instances, list) or not instances:
        raise RequestError('"instances" must be a non-empty list of rows')
    named = all(isinstance(row, dict) and "b64" not in row for row in instances)
    if len(specs) == 1 and not named:  # one input: each row is its bare value
        return {next(iter(specs)): instances}
    if not named:
        raise RequestError(
            f'each row of "instances" must be an object of named inputs ({", ".join(specs)})'
        )
    names = []
    for row in instances:
        names.extend(name for name in row if name not in names)
    columns = {}
    for name in names:
        values = [row.get(name, MISSING) for row in instances]
        if any(value is MISSING for value in values):
            raise RequestError(f'input {name} is in some rows of "instances" but not in all')
        if name in specs and not specs[name]["shape"]:
            if any(value != values[0] for value in values):
                raise RequestError(
                    f"{name} has no row dimension, so it must be the same in every row; send "
                    f"rows with different {name} in separate requests"
                )
            columns[name] = values[0]
        else:
            columns[name] = values
    return columns


MISSING = object()


def to_json(value, name):
    """A numpy output -> JSON: bytes as text, or {"b64": ...} for outputs named *_bytes."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return (
                [to_json(item, name) for item in value]
                if value.ndim
                else to_json(value.item(), name)
            )
        if np.issubdtype(value.dtype, np.floating):
            return [to_json(item, name) for item in value] if value.ndim else float(value)
        return value.tolist()
    if isinstance(value, bytes):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.floating | float):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def format_predict(outputs, row_format, batched_outputs):
    """The answer to a predict request: `outputs` name -> numpy array. In row format, outputs
    in `batched_outputs` are split into rows."""
    if row_format:
        names = [name for name in outputs if name in batched_outputs]
        if names:
            rows = len(outputs[names[0]])
            if len(outputs) == 1:
                return {
                    "predictions": [to_json(outputs[names[0]][i], names[0]) for i in range(rows)]
                }
            return {
                "predictions": [
                    {
                        name: to_json(value[i] if name in names else value, name)
                        for name, value in outputs.items()
                    }
                    for i in range(rows)
                ]
            }
    if len(outputs) == 1:
        name, value = next(iter(outputs.items()))
        return {"outputs": to_json(value, name)}
    return {"outputs": {name: to_json(value, name) for name, value in outputs.items()}}
