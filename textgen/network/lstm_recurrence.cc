// The sequential part of a Keras LSTM layer on the CPU, as two TensorFlow ops.
//
// `textgen.fused_rnn.lstm_layer` computes the input projection of all time steps in one large
// matmul and the weight gradients in two more; what is left is inherently step by step: the
// recurrent matmul and the gate math of each step (TextgenLstmForward) and, going backward, the
// gate-gradient math and one matmul by the transposed recurrent kernel per step
// (TextgenLstmBackward). Written as TensorFlow ops, every step costs the graph executor about ten
// kernel launches; here a step is one Eigen matrix product plus one pass over the gates. The
// streams (batch rows) of an LSTM never interact, so the op splits them into one block per
// TensorFlow intra-op thread and runs each block's whole sequence on its own thread, with no
// synchronisation between steps (textgen's CPU training gives each group of streams one thread,
// and then the op runs on the calling thread).
//
// Keras semantics: gates (i, f, c, o) in that column order; sigmoid on i, f, o; tanh on the
// candidate and on the cell state; no peepholes, no clipping. Every tensor is row-major
// (batch-major), as TensorFlow stores it.
//
// textgen/native_ops.py compiles this file for the machine it runs on, the first time it is
// needed, with the include and link flags of the installed TensorFlow.

#include <algorithm>
#include <vector>

#include <Eigen/Dense>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;

REGISTER_OP("TextgenLstmForward")
    .Input("inputs: float")            // [N, 4H]: input projections x @ kernel ...
    .Input("input_rows: int32")        // [T, B]: ... step t of stream b uses row input_rows[t, b]
    .Input("bias: float")              // [4H]
    .Input("h0: float")                // [B, H]
    .Input("c0: float")                // [B, H]
    .Input("recurrent_kernel: float")  // [H, 4H]
    .Output("hs: float")               // [T, B, H]: the outputs, h_t
    .Output("cs: float")               // [T, B, H]: the cell states, c_t
    .Output("gates: float")            // [T, B, 4H]: sigmoid(i), sigmoid(f), tanh(c~), sigmoid(o)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle rows, h0, states, gates;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &rows));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &h0));
      TF_RETURN_IF_ERROR(c->Concatenate(rows, c->Vector(c->Dim(h0, 1)), &states));
      TF_RETURN_IF_ERROR(c->Concatenate(rows, c->Vector(c->Dim(c->input(0), 1)), &gates));
      c->set_output(0, states);
      c->set_output(1, states);
      c->set_output(2, gates);
      return absl::OkStatus();
    });

REGISTER_OP("TextgenLstmBackward")
    .Attr("input_gradient: bool = false")
    .Input("gates: float")             // [T, B, 4H], from TextgenLstmForward
    .Input("cs: float")                // [T, B, H], from TextgenLstmForward
    .Input("c0: float")                // [B, H]
    .Input("recurrent_kernel: float")  // [H, 4H]
    .Input("d_hs: float")              // [T, B, H]: gradient of the outputs
    .Input("d_h: float")               // [B, H]: gradient of the final h
    .Input("d_c: float")               // [B, H]: gradient of the final c
    .Input("inputs: float")            // [N, 4H], as given to the forward op (only its shape is read)
    .Input("input_rows: int32")        // [T, B], as given to the forward op
    .Output("d_z: float")              // [T, B, 4H]: gradient of the gate pre-activations
    .Output("d_inputs: float")         // [N, 4H] with input_gradient (d_z rows summed into the
                                       // rows they came from), else [0, 4H]
    .Output("d_bias: float")           // [4H]: d_z summed over steps and streams
    .Output("d_h0: float")             // [B, H]
    .Output("d_c0: float")             // [B, H]
    .SetShapeFn([](InferenceContext* c) {
      bool input_gradient;
      TF_RETURN_IF_ERROR(c->GetAttr("input_gradient", &input_gradient));
      c->set_output(0, c->input(0));
      c->set_output(1, input_gradient ? c->input(7)
                                      : c->Matrix(0, c->Dim(c->input(3), 1)));
      c->set_output(2, c->Vector(c->Dim(c->input(3), 1)));
      c->set_output(3, c->input(5));
      c->set_output(4, c->input(6));
      return absl::OkStatus();
    });

// Checks the shapes both ops share and that every input row exists; returns false (with the
// error set) when they do not.
bool CheckShapes(OpKernelContext* context, const Tensor& inputs, const Tensor& input_rows,
                 const Tensor& state, const Tensor& kernel) {
  const bool ok = inputs.dims() == 2 && input_rows.dims() == 2 && state.dims() == 2 &&
                  kernel.dims() == 2 && inputs.dim_size(1) == 4 * state.dim_size(1) &&
                  input_rows.dim_size(1) == state.dim_size(0) &&
                  kernel.dim_size(0) == state.dim_size(1) &&
                  kernel.dim_size(1) == 4 * state.dim_size(1);
  if (!ok) {
    context->CtxFailure(__FILE__, __LINE__, tensorflow::errors::InvalidArgument(
        "textgen LSTM ops: expected [N, 4H] inputs, [T, B] input rows, [B, H] states and a "
        "[H, 4H] recurrent kernel, got ", inputs.shape().DebugString(), ", ",
        input_rows.shape().DebugString(), ", ", state.shape().DebugString(), " and ",
        kernel.shape().DebugString()));
    return false;
  }
  const auto rows = input_rows.flat<int32_t>();
  for (int64_t k = 0; k < rows.size(); ++k) {
    if (rows(k) < 0 || rows(k) >= inputs.dim_size(0)) {
      context->CtxFailure(__FILE__, __LINE__, tensorflow::errors::InvalidArgument(
          "textgen LSTM ops: input row ", rows(k), " at position ", k,
          " is outside [0, ", inputs.dim_size(0), ")"));
      return false;
    }
  }
  return true;
}

// How many blocks of batch rows the ops split the work into: one per intra-op thread, each of at
// least 8 rows (thinner products waste the matrix kernel).
int64_t RowBlocks(OpKernelContext* context, int64_t batch) {
  const auto* threads = context->device()->tensorflow_cpu_worker_threads();
  return std::max<int64_t>(1, std::min<int64_t>(threads->num_threads, batch / 8));
}

// Runs work(block, first_row, rows) for each of the RowBlocks, each block on its own thread.
template <typename Work>
void ForEachRowBlock(OpKernelContext* context, int64_t batch, const Work& work) {
  const int64_t blocks = RowBlocks(context, batch);
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = batch * block / blocks;
      work(block, first, batch * (block + 1) / blocks - first);
    }
  };
  if (blocks == 1) {
    run(0, 1);
    return;
  }
  // The cost is set so high that every block becomes its own shard.
  tensorflow::Shard(blocks, context->device()->tensorflow_cpu_worker_threads()->workers, blocks,
                    /*cost_per_unit=*/int64_t{1} << 40, run);
}

class LstmForwardOp : public OpKernel {
 public:
  explicit LstmForwardOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& inputs = context->input(0);
    const Tensor& input_rows = context->input(1);
    const Tensor& bias = context->input(2);
    const Tensor& h0 = context->input(3);
    const Tensor& c0 = context->input(4);
    const Tensor& kernel = context->input(5);
    if (!CheckShapes(context, inputs, input_rows, h0, kernel)) return;
    OP_REQUIRES(context, c0.shape() == h0.shape() && bias.shape() == TensorShape({kernel.dim_size(1)}),
                tensorflow::errors::InvalidArgument(
                    "textgen LSTM ops: h0 and c0 must have one shape and bias [4H], got ",
                    h0.shape().DebugString(), ", ", c0.shape().DebugString(), " and ",
                    bias.shape().DebugString()));
    const int64_t steps = input_rows.dim_size(0), batch = input_rows.dim_size(1);
    const int64_t units = h0.dim_size(1), width = 4 * units;
    Tensor *hs, *cs, *gates;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({steps, batch, units}), &hs));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({steps, batch, units}), &cs));
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({steps, batch, width}), &gates));
    const int32_t* rows_data = input_rows.flat<int32_t>().data();

    const ConstMatrixMap recurrent(kernel.flat<float>().data(), units, width);
    const ConstArrayMap bias_data(bias.flat<float>().data(), width);
    ForEachRowBlock(context, batch, [&](int64_t block, int64_t first, int64_t rows) {
      const float* h_prev = h0.flat<float>().data() + first * units;
      const float* c_prev = c0.flat<float>().data() + first * units;
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t row = t * batch + first;
        float* z_data = gates->flat<float>().data() + row * width;
        float* h_data = hs->flat<float>().data() + row * units;
        float* c_data = cs->flat<float>().data() + row * units;
        MatrixMap z(z_data, rows, width);
        z.noalias() = ConstMatrixMap(h_prev, rows, units) * recurrent;
        for (int64_t b = 0; b < rows; ++b) {
          float* zb = z_data + b * width;
          const float* x = inputs.flat<float>().data() + int64_t{rows_data[row + b]} * width;
          ArrayMap(zb, width) += ConstArrayMap(x, width) + bias_data;
          ArrayMap i(zb, units), f(zb + units, units), g(zb + 2 * units, units),
              o(zb + 3 * units, units);
          i = i.logistic();
          f = f.logistic();
          g = g.tanh();
          o = o.logistic();
          ArrayMap c(c_data + b * units, units), h(h_data + b * units, units);
          c = f * ConstArrayMap(c_prev + b * units, units) + i * g;
          h = o * c.tanh();
        }
        h_prev = h_data;
        c_prev = c_data;
      }
    });
  }
};

class LstmBackwardOp : public OpKernel {
 public:
  explicit LstmBackwardOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("input_gradient", &input_gradient_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& gates = context->input(0);
    const Tensor& cs = context->input(1);
    const Tensor& c0 = context->input(2);
    const Tensor& kernel = context->input(3);
    const Tensor& d_hs = context->input(4);
    const Tensor& d_h_final = context->input(5);
    const Tensor& d_c_final = context->input(6);
    const Tensor& inputs = context->input(7);
    const Tensor& input_rows = context->input(8);
    if (!CheckShapes(context, inputs, input_rows, c0, kernel)) return;
    const int64_t steps = input_rows.dim_size(0), batch = input_rows.dim_size(1);
    const int64_t units = c0.dim_size(1), width = 4 * units;
    const TensorShape states({steps, batch, units});
    OP_REQUIRES(context, gates.shape() == TensorShape({steps, batch, width}) &&
                         cs.shape() == states && d_hs.shape() == states &&
                         d_h_final.shape() == c0.shape() && d_c_final.shape() == c0.shape(),
                tensorflow::errors::InvalidArgument("textgen LSTM ops: state shapes differ"));
    Tensor *d_z, *d_inputs, *d_bias, *d_h0, *d_c0;
    const int64_t input_count = input_gradient_ ? inputs.dim_size(0) : 0;
    OP_REQUIRES_OK(context, context->allocate_output(0, gates.shape(), &d_z));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({input_count, width}), &d_inputs));
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({width}), &d_bias));
    OP_REQUIRES_OK(context, context->allocate_output(3, c0.shape(), &d_h0));
    OP_REQUIRES_OK(context, context->allocate_output(4, c0.shape(), &d_c0));
    // Each block sums its own rows of d_z (into the bias gradient and, with input_gradient, into
    // the input rows they came from) while they are in cache; the blocks' sums are added at the
    // end, in block order, so the result does not depend on thread timing.
    const int64_t blocks = RowBlocks(context, batch);
    Eigen::ArrayXXf bias_sums = Eigen::ArrayXXf::Zero(width, blocks);
    std::vector<RowMatrix> input_sums(blocks, RowMatrix::Zero(input_count, width));
    const int32_t* rows_data = input_rows.flat<int32_t>().data();

    // Stored transposed once, so each step's product reads it row by row: Eigen runs
    // d_z @ kernel^T on a transposed view about 25% slower.
    const RowMatrix recurrent_t =
        ConstMatrixMap(kernel.flat<float>().data(), units, width).transpose();
    ForEachRowBlock(context, batch, [&](int64_t block, int64_t first, int64_t rows) {
      auto bias_sum = bias_sums.col(block);
      MatrixMap d_h(d_h0->flat<float>().data() + first * units, rows, units);
      MatrixMap d_c(d_c0->flat<float>().data() + first * units, rows, units);
      d_h = ConstMatrixMap(d_h_final.flat<float>().data() + first * units, rows, units);
      d_c = ConstMatrixMap(d_c_final.flat<float>().data() + first * units, rows, units);
      Eigen::ArrayXf c_tanh(units);
      for (int64_t t = steps - 1; t >= 0; --t) {
        const float* c_prev_data = t > 0 ? cs.flat<float>().data() + ((t - 1) * batch + first) * units
                                         : c0.flat<float>().data() + first * units;
        float* d_z_data = d_z->flat<float>().data() + (t * batch + first) * width;
        for (int64_t b = 0; b < rows; ++b) {
          const int64_t row = t * batch + first + b;
          const float* gb = gates.flat<float>().data() + row * width;
          ConstArrayMap i(gb, units), f(gb + units, units), g(gb + 2 * units, units),
              o(gb + 3 * units, units);
          ConstArrayMap c(cs.flat<float>().data() + row * units, units);
          ConstArrayMap c_prev(c_prev_data + b * units, units);
          ArrayMap dh(d_h.data() + b * units, units), dc(d_c.data() + b * units, units);
          float* dzb = d_z_data + b * width;
          ArrayMap d_i(dzb, units), d_f(dzb + units, units), d_g(dzb + 2 * units, units),
              d_o(dzb + 3 * units, units);
          dh += ConstArrayMap(d_hs.flat<float>().data() + row * units, units);
          c_tanh = c.tanh();
          dc += dh * o * (1 - c_tanh * c_tanh);
          d_o = dh * c_tanh * o * (1 - o);
          d_i = dc * g * i * (1 - i);
          d_f = dc * c_prev * f * (1 - f);
          d_g = dc * i * (1 - g * g);
          dc *= f;
          bias_sum += ArrayMap(dzb, width);
          if (input_count > 0) {
            input_sums[block].row(rows_data[row]).array() += ArrayMap(dzb, width).transpose();
          }
        }
        d_h.noalias() = ConstMatrixMap(d_z_data, rows, width) * recurrent_t;
      }
    });
    ArrayMap d_bias_data(d_bias->flat<float>().data(), width);
    d_bias_data = bias_sums.col(0);
    for (int64_t block = 1; block < blocks; ++block) d_bias_data += bias_sums.col(block);
    if (input_count > 0) {
      MatrixMap d_inputs_data(d_inputs->flat<float>().data(), input_count, width);
      d_inputs_data = input_sums[0];
      for (int64_t block = 1; block < blocks; ++block) d_inputs_data += input_sums[block];
    }
  }

 private:
  bool input_gradient_;
};

REGISTER_KERNEL_BUILDER(Name("TextgenLstmForward").Device(tensorflow::DEVICE_CPU), LstmForwardOp);
REGISTER_KERNEL_BUILDER(Name("TextgenLstmBackward").Device(tensorflow::DEVICE_CPU), LstmBackwardOp);

}  // namespace
