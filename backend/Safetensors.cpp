// The safetensors writer (backend/Safetensors.h).
#include "backend/Safetensors.h"
#include "backend/Hdf5.h"

#include <fmt/format.h>
#include <llvm/Support/ConvertUTF.h>

#include <bit>
#include <cmath>
#include <cstring>

namespace raspc {

namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian values; this writer copies floats as they are in memory");

std::string quoted(const std::string &s) { return "\"" + jsonEscape(s) + "\""; }

std::string stringArray(const std::vector<std::string> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + quoted(v[i]);
  return s + "]";
}

std::string scalarArray(const std::vector<Scalar> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + jsonScalar(v[i]);
  return s + "]";
}

// [[row 0], [row 1], ...]: each float32 in its shortest form that reads back to the same float.
std::string residualBasisJson(const Tensor &b) {
  std::string s = "[";
  for (int64_t i = 0; i < b.shape[0]; ++i) {
    s += i ? ", [" : "[";
    for (int64_t j = 0; j < b.shape[1]; ++j) s += fmt::format("{}{}", j ? ", " : "", b.at(i, j));
    s += "]";
  }
  return s + "]";
}

bool isUtf8(const std::string &s) {
  auto *p = reinterpret_cast<const llvm::UTF8 *>(s.data());
  return llvm::isLegalUTF8String(&p, p + s.size());
}

} // namespace

std::string hookedTransformerConfigJson(const Model &m) {
  const ModelConfig &c = m.cfg;
  // Everything TransformerLens would otherwise choose for itself in a way that changes
  // outputs is fixed here: no layer norm, ReLU, learned absolute positions, scores
  // divided by sqrt(d_head), no MLP where the model has none (TransformerLens reads
  // d_mlp 0 as 4 * d_model). Weight processing (folding, centering) is the loader's
  // to leave off.
  return fmt::format(
      "{{\"n_layers\": {}, \"d_model\": {}, \"n_heads\": {}, \"d_head\": {}, \"d_mlp\": {}, \"n_ctx\": {}, "
      "\"d_vocab\": {}, \"d_vocab_out\": {}, \"act_fn\": \"relu\", \"normalization_type\": null, "
      "\"attention_dir\": \"{}\", \"positional_embedding_type\": \"standard\", \"attn_only\": {}, "
      "\"use_attn_scale\": true, \"attn_scale\": {}, \"final_rms\": false, \"gated_mlp\": false, "
      "\"parallel_attn_mlp\": false, \"original_architecture\": \"raspc\", \"model_name\": {}, "
      "\"default_prepend_bos\": true}}",
      c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp, c.n_ctx, c.d_vocab, c.d_vocab_out,
      c.causal ? "causal" : "bidirectional", c.d_mlp == 0 ? "true" : "false",
      // raspc divides scores by sqrt(d_head), by 1 without head dimensions.
      jsonScalar(Scalar(c.d_head > 0 ? std::sqrt(double(c.d_head)) : 1.0)),
      quoted("raspc:" + (m.sourceName.empty() ? m.outputName : m.sourceName)));
}

std::map<std::string, std::string> safetensorsMetadata(const Model &m) {
  const ModelConfig &c = m.cfg;
  std::map<std::string, std::string> md = {
      {"format", "raspc"},
      {"format_version", std::to_string(Model::kFormatVersion)},
      {"n_layers", std::to_string(c.n_layers)},
      {"d_model", std::to_string(c.d_model)},
      {"n_heads", std::to_string(c.n_heads)},
      {"d_head", std::to_string(c.d_head)},
      {"d_mlp", std::to_string(c.d_mlp)},
      {"d_vocab", std::to_string(c.d_vocab)},
      {"d_vocab_out", std::to_string(c.d_vocab_out)},
      {"n_ctx", std::to_string(c.n_ctx)},
      {"causal", c.causal ? "1" : "0"},
      {"bos_id", std::to_string(m.bosId)},
      {"pad_id", std::to_string(m.padId)},
      {"int_tokens", m.intTokens ? "1" : "0"},
      {"output_name", m.outputName},
      {"output_encoding", m.outputEncoding},
      {"source_name", m.sourceName},
      {"source", m.source},
      {"vocab", stringArray(m.vocab)},
      {"residual_labels", stringArray(m.residualLabels)},
      {"output_values", scalarArray(m.outputValues)},
      {"ground_truth", groundTruthJson(m.nodes)},
      {"hooked_transformer_config", hookedTransformerConfigJson(m)},
  };
  // In the metadata, not among the tensors: the tensors are exactly TransformerLens's
  // state dict, which loads strictly.
  if (hasResidualBasis(m)) md["residual_basis"] = residualBasisJson(m.residualBasis);
  return md;
}

llvm::Expected<std::string> safetensorsBytes(const Model &m, const std::string &what) {
  if (auto e = validateModel(m, what)) return e;
  std::string header = "{\"__metadata__\": {";
  bool first = true;
  for (const auto &[key, value] : safetensorsMetadata(m)) {
    // A JSON escape of bytes that are not UTF-8 is a lone surrogate, which strict JSON
    // readers (the safetensors package's) refuse: an error here, not an unreadable file.
    if (!isUtf8(value))
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "%s: metadata '%s' is not valid UTF-8 (safetensors requires UTF-8 text)",
                                     what.c_str(), key.c_str());
    header += (first ? "" : ", ") + quoted(key) + ": " + quoted(value);
    first = false;
  }
  header += "}";
  const auto tensors = expectedTensors(m.cfg);
  uint64_t offset = 0;
  for (const auto &[name, shape] : tensors) {
    const Tensor &t = m.tensors.at(name); // validateModel: present, of this shape
    std::string dims;
    for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
    const uint64_t end = offset + uint64_t(t.data.size()) * sizeof(float);
    header += fmt::format(", {}: {{\"dtype\": \"F32\", \"shape\": [{}], \"data_offsets\": [{}, {}]}}", quoted(name),
                          dims, offset, end);
    offset = end;
  }
  header += "}";
  // The data starts 8-byte aligned, as the safetensors package writes it.
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + header.size() + offset);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out += char((n >> (8 * i)) & 0xff);
  out += header;
  for (const auto &entry : tensors) {
    const Tensor &t = m.tensors.at(entry.first);
    out.append(reinterpret_cast<const char *>(t.data.data()), t.data.size() * sizeof(float));
  }
  return out;
}

llvm::Error writeSafetensors(const Model &m, const std::string &path, const files::OutputRule &rule) {
  auto bytes = safetensorsBytes(m, path);
  if (!bytes) return bytes.takeError();
  return files::writeFileAtomically(path, *bytes, rule);
}

} // namespace raspc
