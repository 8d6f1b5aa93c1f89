// The per-step loops of fast_ops.LayerScan on the CPU, one call per block of K time steps.
//
// Why C++: at small N (SHD-Adding: 96 neurons) a time step is ~40 tiny tensor ops forward and backward, and
// Python plus dispatcher overhead cost more than their arithmetic; at large N (Enwik8: 1024 neurons) the sparse
// recurrent matmul through torch's CSR kernel spends ~40 % zero-filling and copying. Here each neuron's whole step
// (synaptic sum, MLP, memory update, output) runs on SIMD vectors that hold consecutive batch elements.
//
// Layouts (all contiguous, row-major):
//   block buffers (N, F, K, B): feature-major, then step, then batch; F is d_in = d_tree + d_m for the MLP input,
//     d_mlp for hidden pre-activations, d_m for tanh outputs and memories. Each neuron's (F, K*B) rows are
//     contiguous: weight_grads_block takes a block's gradients as dot products along them.
//   activity (T+1, N, B), step 0 the carried-in activity; memory m (N, d_m, B); r (N, B).
//   MLP weights (N, out, in) with the last layer already times 2/3; biases (N, out, 1).
//   Synapse patterns (step_kernels.Synapses): [crow, col, values], CSR with int32 indices; empty where a layer has
//   none. Recurrent synapses: rows n * d_tree + j, columns the N neurons; the backward pass gets the transposed
//   pattern (rows = source neurons, columns = branch rows).
//   Feed-forward synapses, `ff` = [a tensor, crow, col, values] (empty: none), in one of two forms:
//   - sparse inputs (one-hot characters, spikes; ff_sparse): x (C, T, B) with any strides and the pattern
//     transposed (rows = inputs); only nonzero inputs are visited. Backward: x and the transposed pattern whose
//     values are the synapse gradient (in that order, accumulated).
//   - dense inputs: x (T, C, B) contiguous and the pattern, one CSR matmul per step. Backward, only when the inputs
//     need a gradient (the readout's inputs are the hidden activities): grad_x (T, C, B) and the transposed pattern;
//     the synapse gradient is then taken per block in weight_grads_block.
//   The activation is its step_kernels.ACTIVATIONS name.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

// One SIMD register of batch elements: 8 floats under AVX2 (GCC vector extension; narrower targets split it).
// The step loops are instantiated for float only: the model runs its recurrence in fp32 (model.py). A batch is processed in chunks of this width; the last chunk may be partial (`valid` lanes).
template <typename T>
struct Simd {
  static constexpr int64_t kWidth = 32 / sizeof(T);
  typedef T V __attribute__((vector_size(32)));
};

template <typename V, typename T>
inline V load(const T* p, int64_t valid) {
  V v = {};
  if (valid == Simd<T>::kWidth)
    std::memcpy(&v, p, sizeof(V));
  else
    for (int64_t i = 0; i < valid; ++i) v[i] = p[i];
  return v;
}

template <typename V, typename T>
inline void store(T* p, const V& v, int64_t valid) {
  if (valid == Simd<T>::kWidth)
    std::memcpy(p, &v, sizeof(V));
  else
    for (int64_t i = 0; i < valid; ++i) p[i] = v[i];
}

template <typename T>
T* ptr(const torch::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), "layer_scan expects contiguous tensors");
  return t.data_ptr<T>();
}

// A synapse pattern in CSR form, from parts[first], parts[first + 1], parts[first + 2] = crow, col, values; null
// where parts is empty (the layer has no synapses of that kind).
template <typename T>
struct Csr {
  const int32_t* crow = nullptr;
  const int32_t* col = nullptr;
  T* values = nullptr;

  Csr(const std::vector<torch::Tensor>& parts, size_t first) {
    if (parts.empty()) return;
    crow = ptr<int32_t>(parts[first]);
    col = ptr<int32_t>(parts[first + 1]);
    values = ptr<T>(parts[first + 2]);
  }
  explicit operator bool() const { return crow != nullptr; }
};

// torch's own vectorised math (SLEEF, exported by libtorch_cpu): the same tanh/exp torch uses, on registers.
#if defined(__AVX2__)
extern "C" __m256 Sleef_tanhf8_u10avx2(__m256);
extern "C" __m256d Sleef_tanhd4_u10avx2(__m256d);
extern "C" __m256 Sleef_expf8_u10avx2(__m256);
extern "C" __m256d Sleef_expd4_u10avx2(__m256d);
#endif

// One libm function per lane: the fallback where SLEEF's AVX2 versions are not built in.
template <typename T, typename V>
inline V lanewise(const V& v, T (*scalar)(T)) {
  V out;
  for (int64_t i = 0; i < Simd<T>::kWidth; ++i) out[i] = scalar(v[i]);
  return out;
}

template <typename T, typename V>
inline V tanh_vec(const V& v) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) return (V)Sleef_tanhf8_u10avx2((__m256)v);
  else return (V)Sleef_tanhd4_u10avx2((__m256d)v);
#else
  return lanewise<T>(v, static_cast<T (*)(T)>(std::tanh));
#endif
}

template <typename T, typename V>
inline V exp_vec(const V& v) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) return (V)Sleef_expf8_u10avx2((__m256)v);
  else return (V)Sleef_expd4_u10avx2((__m256d)v);
#else
  return lanewise<T>(v, static_cast<T (*)(T)>(std::exp));
#endif
}

enum Activation { kRelu2, kRelu, kSilu };

Activation activation_named(const std::string& name) {
  if (name == "relu2") return kRelu2;
  if (name == "relu") return kRelu;
  TORCH_CHECK(name == "silu", "layer_scan: unknown activation '", name, "'");
  return kSilu;
}

template <typename T, typename V>
inline V activate(const V& z, Activation activation) {
  const V zero = {};
  if (activation == kRelu2) {
    const V p = z > zero ? z : zero;
    return p * p;
  }
  if (activation == kRelu) return z > zero ? z : zero;
  return z / (T(1) + exp_vec<T>(-z));
}

// d activate(z) / dz
template <typename T, typename V>
inline V slope(const V& z, Activation activation) {
  const V zero = {};
  if (activation == kRelu2) return z > zero ? T(2) * z : zero;
  if (activation == kRelu) return z > zero ? zero + T(1) : zero;
  const V s = T(1) / (T(1) + exp_vec<T>(-z));
  return s * (T(1) + z * (T(1) - s));
}

// Rows [row_begin, row_end) of out (rows, B) (+)= w (rows x cols, CSR) @ dense (cols, B). Four partial sums per
// row keep four FMA chains in flight instead of one.
template <typename T>
void csr_matmul(T* out, const Csr<T>& w, const T* dense, int64_t row_begin, int64_t row_end, int64_t batch,
                bool accumulate) {
  using V = typename Simd<T>::V;
  constexpr int64_t W = Simd<T>::kWidth;
  const int32_t *crow = w.crow, *col = w.col;
  const T* values = w.values;
  for (int64_t b0 = 0; b0 < batch; b0 += W) {
    const int64_t valid = std::min(W, batch - b0);
    const T* source = dense + b0;
    for (int64_t row = row_begin; row < row_end; ++row) {
      V a0 = {}, a1 = {}, a2 = {}, a3 = {};
      int32_t e = crow[row];
      const int32_t end = crow[row + 1];
      for (; e + 4 <= end; e += 4) {
        a0 += values[e] * load<V>(source + int64_t(col[e]) * batch, valid);
        a1 += values[e + 1] * load<V>(source + int64_t(col[e + 1]) * batch, valid);
        a2 += values[e + 2] * load<V>(source + int64_t(col[e + 2]) * batch, valid);
        a3 += values[e + 3] * load<V>(source + int64_t(col[e + 3]) * batch, valid);
      }
      for (; e < end; ++e) a0 += values[e] * load<V>(source + int64_t(col[e]) * batch, valid);
      V sum = (a0 + a1) + (a2 + a3);
      if (accumulate) sum += load<V>(out + row * batch + b0, valid);
      store(out + row * batch + b0, sum, valid);
    }
  }
}

// External inputs x (C, T, B) read in place with their strides: the model hands over a view of its (B, T, C) batch,
// in which one step's inputs of one batch element are contiguous.
template <typename T>
struct Inputs {
  const T* data;
  int64_t n_inputs, stride_c, stride_t, stride_b;

  explicit Inputs(const torch::Tensor& x)
      : data(x.data_ptr<T>()), n_inputs(x.size(0)), stride_c(x.stride(0)), stride_t(x.stride(1)),
        stride_b(x.stride(2)) {}
  const T* at(int64_t t, int64_t b) const { return data + t * stride_t + b * stride_b; }
};

// beta (rows, B) += W @ x_t, with W given transposed (by_source: rows = the C inputs, columns = branch rows): only
// nonzero inputs are visited, each adding its column of synapses.
template <typename T>
void scatter_active_inputs(T* beta, const Inputs<T>& x, int64_t t, const Csr<T>& by_source, int64_t batch) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* x_tb = x.at(t, b);
    for (int64_t c = 0; c < x.n_inputs; ++c) {
      const T v = x_tb[c * x.stride_c];
      if (v == T(0)) continue;
      for (int32_t e = by_source.crow[c]; e < by_source.crow[c + 1]; ++e)
        beta[int64_t(by_source.col[e]) * batch + b] += by_source.values[e] * v;
    }
  }
}

// grad.values[e] += sum_b x[c_e, t, b] * d_beta[row_e, b] for every synapse e of the transposed pattern `grad`,
// visiting only the nonzero inputs: the feed-forward synapse gradient of one step.
template <typename T>
void gather_active_input_grads(const Csr<T>& grad, const T* d_beta, const Inputs<T>& x, int64_t t, int64_t batch) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* x_tb = x.at(t, b);
    for (int64_t c = 0; c < x.n_inputs; ++c) {
      const T v = x_tb[c * x.stride_c];
      if (v == T(0)) continue;
      for (int32_t e = grad.crow[c]; e < grad.crow[c + 1]; ++e)
        grad.values[e] += v * d_beta[int64_t(grad.col[e]) * batch + b];
    }
  }
}

// out[a] = bias[a] + sum_j w[a * a_stride + j * j_stride] * v[j] for TO outputs a, on vectors: each weight is
// broadcast across the batch lanes. FMA latency needs about ten independent sums in flight, so a narrow tile splits
// each sum over even and odd j.
template <int64_t TO, typename T, typename V>
inline void weighted_sums(V* out, const T* w, const T* bias, const V* v, int64_t n_j, int64_t a_stride,
                          int64_t j_stride) {
  constexpr int64_t kSplit = TO >= 4 ? 1 : 2;
  V acc[kSplit][TO] = {};
  int64_t j = 0;
  for (; j + kSplit <= n_j; j += kSplit)
    for (int64_t s = 0; s < kSplit; ++s)
      for (int64_t a = 0; a < TO; ++a) acc[s][a] += w[a * a_stride + (j + s) * j_stride] * v[j + s];
  for (; j < n_j; ++j)
    for (int64_t a = 0; a < TO; ++a) acc[0][a] += w[a * a_stride + j * j_stride] * v[j];
  for (int64_t a = 0; a < TO; ++a) {
    V sum = acc[0][a];
    if constexpr (kSplit == 2) sum += acc[1][a];
    out[a] = bias ? sum + bias[a] : sum;
  }
}

// out[a] = bias[a] + sum_j w[a * a_stride + j * j_stride] * v[j] for all n_a outputs, in tiles of 8, 4, 2 and 1.
template <typename T, typename V>
inline void all_weighted_sums(V* out, const T* w, const T* bias, const V* v, int64_t n_a, int64_t n_j,
                              int64_t a_stride, int64_t j_stride) {
  int64_t a = 0;
  auto at = [&](int64_t first) { return std::make_tuple(out + first, w + first * a_stride, bias ? bias + first : bias); };
  for (; a + 8 <= n_a; a += 8) {
    auto [o, w_a, b] = at(a);
    weighted_sums<8>(o, w_a, b, v, n_j, a_stride, j_stride);
  }
  if (a + 4 <= n_a) {
    auto [o, w_a, b] = at(a);
    weighted_sums<4>(o, w_a, b, v, n_j, a_stride, j_stride);
    a += 4;
  }
  if (a + 2 <= n_a) {
    auto [o, w_a, b] = at(a);
    weighted_sums<2>(o, w_a, b, v, n_j, a_stride, j_stride);
    a += 2;
  }
  if (a < n_a) {
    auto [o, w_a, b] = at(a);
    weighted_sums<1>(o, w_a, b, v, n_j, a_stride, j_stride);
  }
}

// out (n_out) = w (n_out, n_in) @ x (n_in) + bias, on vectors.
template <typename T, typename V>
inline void matvec(V* out, const T* w, const T* bias, const V* x, int64_t n_out, int64_t n_in) {
  all_weighted_sums(out, w, bias, x, n_out, n_in, n_in, int64_t(1));
}

// out (n_in) = w (n_out, n_in)^T @ g (n_out), on vectors.
template <typename T, typename V>
inline void matvec_transposed(V* out, const T* w, const V* g, int64_t n_out, int64_t n_in) {
  all_weighted_sums(out, w, static_cast<const T*>(nullptr), g, n_in, n_out, int64_t(1), n_in);
}

// Element (n, f, k, b0) of a block buffer (N, F, K, B).
struct BlockIndex {
  int64_t steps, batch;
  int64_t operator()(int64_t n, int64_t f, int64_t features, int64_t k, int64_t b0) const {
    return ((n * features + f) * steps + k) * batch + b0;
  }
};

template <typename T>
struct Mlp {  // one neuron's MLP weights, the layers in order
  std::vector<const T*> weights, biases;
  std::vector<int64_t> n_out, n_in;
  int64_t widest = 0, macs = 0;  // macs: multiply-adds of one neuron and batch element

  Mlp(const std::vector<torch::Tensor>& w, const std::vector<torch::Tensor>& b) {
    for (size_t l = 0; l < w.size(); ++l) {
      weights.push_back(ptr<T>(w[l]));
      biases.push_back(b.empty() ? nullptr : ptr<T>(b[l]));
      n_out.push_back(w[l].size(1));
      n_in.push_back(w[l].size(2));
      widest = std::max({widest, n_out.back(), n_in.back()});
      macs += n_out.back() * n_in.back();
    }
  }
  const T* weight(size_t layer, int64_t n) const { return weights[layer] + n * n_out[layer] * n_in[layer]; }
  const T* bias(size_t layer, int64_t n) const { return biases[layer] + n * n_out[layer]; }
};

// The work of one neuron for one step, in multiply-adds, decides how many neurons a thread takes at a time: enough
// that a step's parallel region (a few microseconds to start) pays for itself.
int64_t neuron_grain(int64_t work_per_neuron) {
  constexpr int64_t kMinWorkPerThread = 1 << 15;
  return std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, work_per_neuron));
}

template <typename T>
void forward_block_impl(torch::Tensor h0, const std::vector<torch::Tensor>& zs, torch::Tensor th,
                        torch::Tensor m_blk, torch::Tensor activity, int64_t t0, torch::Tensor m, torch::Tensor r,
                        torch::Tensor abs_sum, const std::vector<torch::Tensor>& rec,
                        const std::vector<torch::Tensor>& ff, bool ff_sparse,
                        const c10::optional<torch::Tensor>& rec_keep, torch::Tensor kappa,
                        torch::Tensor gate_gain, torch::Tensor w_y, torch::Tensor bias,
                        const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& biases,
                        Activation activation, bool high_pass, bool rectify, double kappa_r_) {
  using V = typename Simd<T>::V;
  constexpr int64_t W = Simd<T>::kWidth;
  const int64_t N = h0.size(0), d_in = h0.size(1), K = h0.size(2), B = h0.size(3), d_m = m.size(1);
  const int64_t d_tree = d_in - d_m;
  const BlockIndex at{K, B};
  const Mlp<T> mlp(weights, biases);
  const size_t n_layers = weights.size();
  const Csr<T> rec_synapses(rec, 0), ff_synapses(ff, 1);  // ff_synapses: transposed where ff_sparse
  const bool recurrent = bool(rec_synapses), feed_forward = bool(ff_synapses);
  const T kappa_r = static_cast<T>(kappa_r_);

  T *h0_p = ptr<T>(h0), *th_p = ptr<T>(th), *m_blk_p = ptr<T>(m_blk), *act_p = ptr<T>(activity);
  T *m_p = ptr<T>(m), *r_p = ptr<T>(r), *abs_p = ptr<T>(abs_sum);
  const T *kappa_p = ptr<T>(kappa), *gate_p = ptr<T>(gate_gain), *w_y_p = ptr<T>(w_y), *bias_p = ptr<T>(bias);
  const T* keep_p = rec_keep ? ptr<T>(*rec_keep) : nullptr;
  std::vector<T*> z_p;
  for (const auto& z : zs) z_p.push_back(ptr<T>(z));
  const int64_t grain = neuron_grain(B * (mlp.macs + d_tree * 4));
  const int64_t buffer = std::max(mlp.widest, d_in);

  // The synaptic input beta of one step, contiguous (N * d_tree, B).
  std::vector<T> beta(recurrent || feed_forward ? N * d_tree * B : 0), a_in(keep_p ? N * B : 0);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t t = t0 + k;
    const T* a_prev = act_p + t * N * B;
    T* a_next = act_p + (t + 1) * N * B;
    if (feed_forward && ff_sparse) {
      std::fill(beta.begin(), beta.end(), T(0));
      scatter_active_inputs(beta.data(), Inputs<T>(ff[0]), t, ff_synapses, B);
    } else if (feed_forward) {
      const T* x_t = ptr<T>(ff[0]) + t * ff[0].size(1) * B;
      at::parallel_for(0, N * d_tree, grain * d_tree, [&](int64_t begin, int64_t end) {
        csr_matmul(beta.data(), ff_synapses, x_t, begin, end, B, false);
      });
    }
    if (recurrent) {
      const T* source = a_prev;
      if (keep_p) {
        for (int64_t i = 0; i < N * B; ++i) a_in[i] = a_prev[i] * keep_p[i];
        source = a_in.data();
      }
      at::parallel_for(0, N * d_tree, grain * d_tree, [&](int64_t begin, int64_t end) {
        csr_matmul(beta.data(), rec_synapses, source, begin, end, B, feed_forward);
      });
    }
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      std::vector<V> x(buffer), hidden(buffer), z(buffer);
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t b0 = 0; b0 < B; b0 += W) {
          const int64_t valid = std::min(W, B - b0);
          // MLP input [beta ; kappa * m], written to h0 for the weight gradients
          for (int64_t j = 0; j < d_tree; ++j)
            x[j] = beta.empty() ? V{} : load<V>(beta.data() + (n * d_tree + j) * B + b0, valid);
          for (int64_t i = 0; i < d_m; ++i)
            x[d_tree + i] = kappa_p[n * d_m + i] * load<V>(m_p + (n * d_m + i) * B + b0, valid);
          for (int64_t f = 0; f < d_in; ++f) store(h0_p + at(n, f, d_in, k, b0), x[f], valid);

          const V* input = x.data();
          for (size_t layer = 0; layer < n_layers; ++layer) {
            matvec(z.data(), mlp.weight(layer, n), mlp.bias(layer, n), input, mlp.n_out[layer], mlp.n_in[layer]);
            if (layer + 1 < n_layers) {
              for (int64_t o = 0; o < mlp.n_out[layer]; ++o) {
                store(z_p[layer] + at(n, o, mlp.n_out[layer], k, b0), z[o], valid);
                hidden[o] = activate<T>(z[o], activation);
              }
              input = hidden.data();
            }
          }
          // z holds delta (d_m), already times 2/3: m = kappa * m + gate_gain * tanh(delta), y = w_y . m
          T abs_delta = 0;
          V y = {};
          for (int64_t i = 0; i < d_m; ++i) {
            for (int64_t lane = 0; lane < valid; ++lane) abs_delta += std::abs(z[i][lane]);
            const V th_i = tanh_vec<T>(z[i]);
            const V m_new = x[d_tree + i] + gate_p[n * d_m + i] * th_i;
            store(th_p + at(n, i, d_m, k, b0), th_i, valid);
            store(m_p + (n * d_m + i) * B + b0, m_new, valid);
            store(m_blk_p + at(n, i, d_m, k, b0), m_new, valid);
            y += w_y_p[n * d_m + i] * m_new;
          }
          abs_p[n] += abs_delta;
          V pre;
          if (high_pass) {  // pre = y - r_t + bias with r_t = kappa_r r_{t-1} + (1 - kappa_r) y
            const V r_old = load<V>(r_p + n * B + b0, valid), y_minus_r = y - r_old;
            store(r_p + n * B + b0, r_old + (T(1) - kappa_r) * y_minus_r, valid);
            pre = bias_p[n] + kappa_r * y_minus_r;
          } else {
            pre = y + bias_p[n];
          }
          const V zero = {};
          store(a_next + n * B + b0, rectify ? (pre > zero ? pre : zero) : pre, valid);
        }
      }
    });
  }
}

template <typename T>
void backward_block_impl(torch::Tensor grad_activity, torch::Tensor activity, int64_t t0, torch::Tensor th,
                         const std::vector<torch::Tensor>& zs, torch::Tensor d_h0, const std::vector<torch::Tensor>& d_zs,
                         torch::Tensor d_delta, torch::Tensor d_y, torch::Tensor d_pre,
                         const c10::optional<torch::Tensor>& d_m_total, torch::Tensor dm, torch::Tensor dr,
                         torch::Tensor da_rec, const std::vector<torch::Tensor>& rec_t,
                         const std::vector<torch::Tensor>& ff, bool ff_sparse,
                         const c10::optional<torch::Tensor>& rec_keep,
                         torch::Tensor kappa, torch::Tensor gate_gain, torch::Tensor w_y, torch::Tensor abs_scale,
                         const std::vector<torch::Tensor>& weights_in, Activation activation, bool high_pass,
                         bool rectify, double kappa_r_) {
  using V = typename Simd<T>::V;
  constexpr int64_t W = Simd<T>::kWidth;
  const int64_t N = d_h0.size(0), d_in = d_h0.size(1), K = d_h0.size(2), B = d_h0.size(3), d_m = dm.size(1);
  const int64_t d_tree = d_in - d_m;
  const BlockIndex at{K, B};
  const Mlp<T> mlp(weights_in, {});
  // ff_by_source: the transposed feed-forward pattern, its values the synapse gradient where ff_sparse
  const Csr<T> rec_by_source(rec_t, 0), ff_by_source(ff, 1);
  const bool recurrent = bool(rec_by_source), feed_forward = bool(ff_by_source);
  const T kappa_r = static_cast<T>(kappa_r_);

  const T *g_act_p = ptr<T>(grad_activity), *act_p = ptr<T>(activity), *th_p = ptr<T>(th);
  T *d_h0_p = ptr<T>(d_h0), *d_delta_p = ptr<T>(d_delta), *d_y_p = ptr<T>(d_y), *d_pre_p = ptr<T>(d_pre);
  T* d_m_total_p = d_m_total ? ptr<T>(*d_m_total) : nullptr;
  T *dm_p = ptr<T>(dm), *dr_p = ptr<T>(dr), *da_rec_p = ptr<T>(da_rec);
  const T *kappa_p = ptr<T>(kappa), *gate_p = ptr<T>(gate_gain), *w_y_p = ptr<T>(w_y);
  const T *abs_p = ptr<T>(abs_scale), *keep_p = rec_keep ? ptr<T>(*rec_keep) : nullptr;
  std::vector<const T*> z_p;
  std::vector<T*> d_z_p;
  for (size_t l = 0; l < zs.size(); ++l) z_p.push_back(ptr<T>(zs[l])), d_z_p.push_back(ptr<T>(d_zs[l]));
  const int64_t grain = neuron_grain(B * (mlp.macs + d_tree * 4));
  const int64_t buffer = std::max(mlp.widest, d_in);

  std::vector<T> d_beta(recurrent || feed_forward ? N * d_tree * B : 0);
  for (int64_t k = K - 1; k >= 0; --k) {
    const int64_t t = t0 + k;
    const T* g_act = g_act_p + t * N * B;
    const T* a_out = act_p + (t + 1) * N * B;
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      std::vector<V> g(buffer), g_in(buffer), dm_total(d_m);
      const V zero = {};
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t b0 = 0; b0 < B; b0 += W) {
          const int64_t valid = std::min(W, B - b0);
          const V da = load<V>(g_act + n * B + b0, valid) + load<V>(da_rec_p + n * B + b0, valid);
          const V dpre = rectify ? (load<V>(a_out + n * B + b0, valid) > zero ? da : zero) : da;
          V dy = dpre;
          if (high_pass) {  // pre = y - r_t + b with r_t = kappa_r r_{t-1} + (1 - kappa_r) y
            const V dr_old = load<V>(dr_p + n * B + b0, valid);
            dy = kappa_r * dpre + (T(1) - kappa_r) * dr_old;
            store(dr_p + n * B + b0, (dr_old - dpre) * kappa_r, valid);
          }
          store(d_pre_p + (n * K + k) * B + b0, dpre, valid);
          store(d_y_p + (n * K + k) * B + b0, dy, valid);
          for (int64_t i = 0; i < d_m; ++i) {
            const V th_i = load<V>(th_p + at(n, i, d_m, k, b0), valid);
            const V sign = th_i > zero ? zero + T(1) : (th_i < zero ? zero - T(1) : zero);
            dm_total[i] = load<V>(dm_p + (n * d_m + i) * B + b0, valid) + w_y_p[n * d_m + i] * dy;
            g[i] = abs_p[n] * sign + dm_total[i] * gate_p[n * d_m + i] * (T(1) - th_i * th_i);
            store(d_delta_p + at(n, i, d_m, k, b0), g[i], valid);
            if (d_m_total_p) store(d_m_total_p + at(n, i, d_m, k, b0), dm_total[i], valid);
          }
          for (size_t layer = weights_in.size(); layer-- > 0;) {
            const int64_t n_in = mlp.n_in[layer];
            matvec_transposed(g_in.data(), mlp.weight(layer, n), g.data(), mlp.n_out[layer], n_in);
            if (layer > 0) {
              for (int64_t f = 0; f < n_in; ++f) {
                g_in[f] *= slope<T>(load<V>(z_p[layer - 1] + at(n, f, n_in, k, b0), valid), activation);
                store(d_z_p[layer - 1] + at(n, f, n_in, k, b0), g_in[f], valid);
              }
            }
            std::swap(g, g_in);
          }
          // g is the gradient of the MLP input [beta ; m_tilde]
          for (int64_t f = 0; f < d_in; ++f) store(d_h0_p + at(n, f, d_in, k, b0), g[f], valid);
          if (!d_beta.empty())
            for (int64_t j = 0; j < d_tree; ++j) store(d_beta.data() + (n * d_tree + j) * B + b0, g[j], valid);
          for (int64_t i = 0; i < d_m; ++i)
            store(dm_p + (n * d_m + i) * B + b0, (dm_total[i] + g[d_tree + i]) * kappa_p[n * d_m + i], valid);
        }
      }
    });
    if (feed_forward && ff_sparse) {
      gather_active_input_grads(ff_by_source, d_beta.data(), Inputs<T>(ff[0]), t, B);
    } else if (feed_forward) {  // gradient of the inputs, (C, B) at step t
      const int64_t n_inputs = ff[0].size(1);
      T* grad_x_t = ptr<T>(ff[0]) + t * n_inputs * B;
      at::parallel_for(0, n_inputs, grain, [&](int64_t begin, int64_t end) {
        csr_matmul(grad_x_t, ff_by_source, d_beta.data(), begin, end, B, false);
      });
    }
    if (recurrent) {  // gradient reaching a_{t-1} through the recurrent synapses
      at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
        csr_matmul(da_rec_p, rec_by_source, d_beta.data(), begin, end, B, false);
        if (keep_p)
          for (int64_t i = begin * B; i < end * B; ++i) da_rec_p[i] *= keep_p[i];
      });
    }
  }
}

// The sum of a vector's lanes by halving: log2(width) shuffles and adds instead of a chain of scalar adds.
template <typename T>
inline T sum_lanes(typename Simd<T>::V v) {
  constexpr int64_t W = Simd<T>::kWidth;
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> I;
  typedef I Mask __attribute__((vector_size(sizeof(typename Simd<T>::V))));
  if constexpr (W == 8) {
    v += __builtin_shuffle(v, Mask{4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, Mask{2, 3, 0, 1, 2, 3, 0, 1});
    v += __builtin_shuffle(v, Mask{1, 0, 1, 0, 1, 0, 1, 0});
  } else {
    static_assert(W == 4);
    v += __builtin_shuffle(v, Mask{2, 3, 0, 1});
    v += __builtin_shuffle(v, Mask{1, 0, 1, 0});
  }
  return v[0];
}

// out[o, i] += scale * sum_r g[o, r] * x[i, r] for a TO x TI tile of outputs: the rows of g and x are a block's K*B
// (step, batch) pairs, contiguous, so each gradient element is one long dot product kept in a register.
template <int64_t TO, int64_t TI, typename T>
inline void outer_tile(T* out, const T* g, const T* x, int64_t o, int64_t i, int64_t n_in, int64_t rows, T scale) {
  using V = typename Simd<T>::V;
  constexpr int64_t W = Simd<T>::kWidth;
  V acc[TO][TI] = {};
  int64_t r = 0;
  for (; r + W <= rows; r += W) {
    V gv[TO], xv[TI];
    for (int64_t a = 0; a < TO; ++a) gv[a] = load<V>(g + (o + a) * rows + r, W);
    for (int64_t c = 0; c < TI; ++c) xv[c] = load<V>(x + (i + c) * rows + r, W);
    for (int64_t a = 0; a < TO; ++a)
      for (int64_t c = 0; c < TI; ++c) acc[a][c] += gv[a] * xv[c];
  }
  for (int64_t a = 0; a < TO; ++a)
    for (int64_t c = 0; c < TI; ++c) {
      T sum = sum_lanes<T>(acc[a][c]);
      for (int64_t rest = r; rest < rows; ++rest) sum += g[(o + a) * rows + rest] * x[(i + c) * rows + rest];
      out[(o + a) * n_in + i + c] += scale * sum;
    }
}

// out (n_out, n_in) += scale * g (n_out, rows) @ x (n_in, rows)^T, in tiles of 4 outputs by 2 inputs.
template <typename T>
void accumulate_outer(T* out, const T* g, const T* x, int64_t n_out, int64_t n_in, int64_t rows, T scale) {
  int64_t o = 0;
  for (; o + 4 <= n_out; o += 4) {
    int64_t i = 0;
    for (; i + 2 <= n_in; i += 2) outer_tile<4, 2>(out, g, x, o, i, n_in, rows, scale);
    if (i < n_in) outer_tile<4, 1>(out, g, x, o, i, n_in, rows, scale);
  }
  for (; o < n_out; ++o) {
    int64_t i = 0;
    for (; i + 2 <= n_in; i += 2) outer_tile<1, 2>(out, g, x, o, i, n_in, rows, scale);
    if (i < n_in) outer_tile<1, 1>(out, g, x, o, i, n_in, rows, scale);
  }
}

// out (n) += scale * the sums of the rows of g (n, rows): bias gradients.
template <typename T>
void accumulate_row_sums(T* out, const T* g, int64_t n, int64_t rows, T scale) {
  for (int64_t o = 0; o < n; ++o) {
    T sum = 0;
    for (int64_t r = 0; r < rows; ++r) sum += g[o * rows + r];
    out[o] += scale * sum;
  }
}

// grad[e + s] += sum_k d_beta[k] . source_k[col[e + s]] for S synapses of one branch row at a time: the row's
// d_beta is loaded once for all S, and two accumulators per synapse (even and odd steps) keep 2*S FMA chains going.
template <int64_t S, typename T>
inline void synapse_dots(T* grad, const int32_t* col, int32_t e, const T* d_beta, const T* sources, int64_t n_sources,
                         const T* keep, int64_t K, int64_t B) {
  using V = typename Simd<T>::V;
  constexpr int64_t W = Simd<T>::kWidth;
  const T* source[S];
  for (int64_t s = 0; s < S; ++s) source[s] = sources + int64_t(col[e + s]) * B;
  const int64_t step = n_sources * B;
  T sum[S] = {};
  for (int64_t b0 = 0; b0 < B; b0 += W) {
    const int64_t valid = std::min(W, B - b0);
    V even[S] = {}, odd[S] = {};
    int64_t k = 0;
    for (; k + 2 <= K; k += 2) {
      const V d0 = load<V>(d_beta + k * B + b0, valid), d1 = load<V>(d_beta + (k + 1) * B + b0, valid);
      for (int64_t s = 0; s < S; ++s) {
        even[s] += d0 * load<V>(source[s] + k * step + b0, valid);
        odd[s] += d1 * load<V>(source[s] + (k + 1) * step + b0, valid);
      }
    }
    if (k < K) {
      const V d0 = load<V>(d_beta + k * B + b0, valid);
      for (int64_t s = 0; s < S; ++s) even[s] += d0 * load<V>(source[s] + k * step + b0, valid);
    }
    for (int64_t s = 0; s < S; ++s) {
      V total = even[s] + odd[s];
      if (keep) total *= load<V>(keep + int64_t(col[e + s]) * B + b0, valid);
      sum[s] += sum_lanes<T>(total);
    }
  }
  for (int64_t s = 0; s < S; ++s) grad[e + s] += sum[s];
}

// Gradient of the values of a dense-input synapse pattern (`grads` = step_kernels.PatternGrad: [crow, col,
// grad_values, sources]), rows of neurons [begin, end): grad[e] += sum over the block's steps and batch of
// d_beta[row_e] * source[col_e]. d_beta is the branch part of d_h0 (N, d_in, K, B); sources (T, C, B) are read from
// step t0 on, times keep (C, B) if given.
template <typename T>
void accumulate_synapse_grads(const std::vector<torch::Tensor>& grads, const T* d_h0, int64_t d_in, int64_t d_tree,
                              int64_t K, int64_t B, int64_t t0, const T* keep, int64_t begin, int64_t end) {
  const Csr<T> pattern(grads, 0);
  const int32_t *crow = pattern.crow, *col = pattern.col;
  T* grad = pattern.values;
  const int64_t n_sources = grads[3].size(1);
  const T* sources = ptr<T>(grads[3]) + t0 * n_sources * B;
  for (int64_t n = begin; n < end; ++n)
    for (int64_t j = 0; j < d_tree; ++j) {
      const T* d_beta = d_h0 + (n * d_in + j) * K * B;
      const int64_t row = n * d_tree + j;
      int32_t e = crow[row];
      for (; e + 4 <= crow[row + 1]; e += 4) synapse_dots<4>(grad, col, e, d_beta, sources, n_sources, keep, K, B);
      for (; e < crow[row + 1]; ++e) synapse_dots<1>(grad, col, e, d_beta, sources, n_sources, keep, K, B);
    }
}

// The parameter gradients of one block, accumulated in place, each neuron's from its own contiguous (F, K*B) rows of
// the block buffers: MLP weights and biases (the last layer's times last_scale), w_y, the output bias, and the
// synapse values of the dense-input patterns (`rec_grads`, `ff_grads`: [crow, col, grad_values, sources] or empty).
template <typename T>
void weight_grads_block_impl(torch::Tensor h0, const std::vector<torch::Tensor>& zs,
                             const std::vector<torch::Tensor>& d_zs, torch::Tensor d_h0, torch::Tensor d_delta,
                             torch::Tensor m_blk, torch::Tensor d_y, torch::Tensor d_pre, int64_t t0,
                             const std::vector<torch::Tensor>& grad_weights,
                             const std::vector<torch::Tensor>& grad_biases, torch::Tensor grad_w_y,
                             torch::Tensor grad_bias, const std::vector<torch::Tensor>& rec_grads,
                             const std::vector<torch::Tensor>& ff_grads, const c10::optional<torch::Tensor>& rec_keep,
                             Activation activation, double last_scale_) {
  using V = typename Simd<T>::V;
  constexpr int64_t W = Simd<T>::kWidth;
  const int64_t N = h0.size(0), d_in = h0.size(1), K = h0.size(2), B = h0.size(3), d_m = m_blk.size(1);
  const int64_t d_tree = d_in - d_m, rows = K * B;
  const size_t n_layers = grad_weights.size();
  const T last_scale = static_cast<T>(last_scale_);
  const T *h0_p = ptr<T>(h0), *d_h0_p = ptr<T>(d_h0), *m_p = ptr<T>(m_blk), *d_y_p = ptr<T>(d_y);
  const T *d_pre_p = ptr<T>(d_pre), *keep_p = rec_keep ? ptr<T>(*rec_keep) : nullptr;
  int64_t widest = 0, macs = 0;
  for (const auto& w : grad_weights) widest = std::max(widest, w.size(2)), macs += w.size(1) * w.size(2);
  const int64_t synapses_per_neuron = (rec_grads.empty() ? 0 : rec_grads[1].numel()) / N +
                                      (ff_grads.empty() ? 0 : ff_grads[1].numel()) / N;
  at::parallel_for(0, N, neuron_grain(rows * (macs + synapses_per_neuron)), [&](int64_t begin, int64_t end) {
    std::vector<T> inputs(widest * rows);  // a hidden layer's activations, the next layer's inputs
    for (int64_t n = begin; n < end; ++n) {
      for (size_t layer = 0; layer < n_layers; ++layer) {
        const int64_t n_out = grad_weights[layer].size(1), n_in = grad_weights[layer].size(2);
        const bool last = layer + 1 == n_layers;
        const T scale = last ? last_scale : T(1);
        const T* g = (last ? ptr<T>(d_delta) : ptr<T>(d_zs[layer])) + n * n_out * rows;
        const T* x = h0_p + n * d_in * rows;
        if (layer > 0) {
          const T* z = ptr<T>(zs[layer - 1]) + n * n_in * rows;
          for (int64_t r = 0; r < n_in * rows; r += W) {
            const int64_t valid = std::min(W, n_in * rows - r);
            store(inputs.data() + r, activate<T>(load<V>(z + r, valid), activation), valid);
          }
          x = inputs.data();
        }
        accumulate_outer(ptr<T>(grad_weights[layer]) + n * n_out * n_in, g, x, n_out, n_in, rows, scale);
        accumulate_row_sums(ptr<T>(grad_biases[layer]) + n * n_out, g, n_out, rows, scale);
      }
      accumulate_outer(ptr<T>(grad_w_y) + n * d_m, d_y_p + n * rows, m_p + n * d_m * rows, 1, d_m, rows, T(1));
      accumulate_row_sums(ptr<T>(grad_bias) + n, d_pre_p + n * rows, 1, rows, T(1));
    }
    if (!rec_grads.empty())
      accumulate_synapse_grads(rec_grads, d_h0_p, d_in, d_tree, K, B, t0, keep_p, begin, end);
    if (!ff_grads.empty())
      accumulate_synapse_grads<T>(ff_grads, d_h0_p, d_in, d_tree, K, B, t0, nullptr, begin, end);
  });
}

void forward_block(torch::Tensor h0, std::vector<torch::Tensor> zs, torch::Tensor th, torch::Tensor m_blk,
                   torch::Tensor activity, int64_t t0, torch::Tensor m, torch::Tensor r, torch::Tensor abs_sum,
                   std::vector<torch::Tensor> rec, std::vector<torch::Tensor> ff, bool ff_sparse,
                   c10::optional<torch::Tensor> rec_keep, torch::Tensor kappa, torch::Tensor gate_gain,
                   torch::Tensor w_y, torch::Tensor bias, std::vector<torch::Tensor> weights,
                   std::vector<torch::Tensor> biases, const std::string& activation, bool high_pass, bool rectify,
                   double kappa_r) {
  TORCH_CHECK(h0.scalar_type() == at::kFloat, "elm_forward_block: float32 tensors expected");
  forward_block_impl<float>(h0, zs, th, m_blk, activity, t0, m, r, abs_sum, rec, ff, ff_sparse,
                            rec_keep, kappa, gate_gain, w_y, bias, weights, biases,
                            activation_named(activation), high_pass, rectify, kappa_r);
}

void backward_block(torch::Tensor grad_activity, torch::Tensor activity, int64_t t0, torch::Tensor th,
                    std::vector<torch::Tensor> zs, torch::Tensor d_h0, std::vector<torch::Tensor> d_zs,
                    torch::Tensor d_delta, torch::Tensor d_y, torch::Tensor d_pre,
                    c10::optional<torch::Tensor> d_m_total, torch::Tensor dm, torch::Tensor dr, torch::Tensor da_rec,
                    std::vector<torch::Tensor> rec_t, std::vector<torch::Tensor> ff, bool ff_sparse,
                    c10::optional<torch::Tensor> rec_keep, torch::Tensor kappa, torch::Tensor gate_gain,
                    torch::Tensor w_y, torch::Tensor abs_scale, std::vector<torch::Tensor> weights_in,
                    const std::string& activation, bool high_pass, bool rectify, double kappa_r) {
  TORCH_CHECK(d_h0.scalar_type() == at::kFloat, "elm_backward_block: float32 tensors expected");
  backward_block_impl<float>(grad_activity, activity, t0, th, zs, d_h0, d_zs, d_delta, d_y, d_pre, d_m_total,
                             dm, dr, da_rec, rec_t, ff, ff_sparse, rec_keep, kappa, gate_gain,
                             w_y, abs_scale, weights_in, activation_named(activation), high_pass, rectify,
                             kappa_r);
}

void weight_grads_block(torch::Tensor h0, std::vector<torch::Tensor> zs, std::vector<torch::Tensor> d_zs,
                        torch::Tensor d_h0, torch::Tensor d_delta, torch::Tensor m_blk, torch::Tensor d_y,
                        torch::Tensor d_pre, int64_t t0, std::vector<torch::Tensor> grad_weights,
                        std::vector<torch::Tensor> grad_biases, torch::Tensor grad_w_y, torch::Tensor grad_bias,
                        std::vector<torch::Tensor> rec_grads, std::vector<torch::Tensor> ff_grads,
                        c10::optional<torch::Tensor> rec_keep, const std::string& activation,
                        double last_scale) {
  TORCH_CHECK(h0.scalar_type() == at::kFloat, "elm_weight_grads_block: float32 tensors expected");
  weight_grads_block_impl<float>(h0, zs, d_zs, d_h0, d_delta, m_blk, d_y, d_pre, t0, grad_weights, grad_biases,
                                 grad_w_y, grad_bias, rec_grads, ff_grads, rec_keep, activation_named(activation),
                                 last_scale);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("forward_block", &forward_block, "K forward steps of an ELM layer, filling the block buffers");
  module.def("backward_block", &backward_block, "K backward steps of an ELM layer, filling the gradient buffers");
  module.def("weight_grads_block", &weight_grads_block, "The parameter gradients of one block, accumulated");
}
