// raspc show: a compiled model on one input, as a picture. The attention pattern of
// every head that computes or serves a node (a heatmap, query rows x key columns, BOS
// included, titled by the node from the ground truth) and the s-ops decoded from the
// residual stream after each sublayer (tables: node rows x positions). SVG, or an HTML
// page with the same SVG and the tables as HTML.
#include "backend/Hdf5.h"
#include "runtime/Executor.h"
#include "support/Files.h"
#include "tools/Commands.h"
#include "tools/Plot.h"

#include <fmt/format.h>
#include <llvm/ADT/StringRef.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>

namespace raspc::tools {

std::map<std::pair<int, int>, std::string> headLabels(const Model &m) {
  std::map<std::pair<int, int>, std::string> labels;
  for (const NodeInfo &n : m.nodes) {
    for (int h : n.heads) labels[{n.layer, h}] = nodeLabel(n);
    for (const HelperBlock &b : n.helpers)
      for (int h : b.heads) labels[{b.layer, h}] = nodeLabel(n) + " (" + b.role + ")";
  }
  return labels;
}

namespace {

void error(const std::string &msg) { llvm::errs() << "raspc: error: " << msg << "\n"; }

struct HeadPanel {
  int layer, head;
  std::string label;
  Eigen::MatrixXd pattern; // [query, key], BOS first
};

struct Step {
  int layer;
  std::string sublayer; // "embed" | "attn" | "mlp"
  std::vector<std::pair<std::string, std::vector<Scalar>>> values;
  std::vector<bool> fresh; // per value: computed by this sublayer
};

// What one forward pass shows: the heads' patterns and the decoded values per step.
struct Picture {
  std::string title;
  std::vector<std::string> tokens; // "BOS", then the input's
  std::vector<HeadPanel> heads;
  std::vector<Step> steps;
};

std::string stepName(const Step &s) {
  return s.layer < 0 ? std::string("after the embedding") : fmt::format("after layer {} {}", s.layer, s.sublayer);
}

// At most `n` characters (UTF-8 aware enough for labels): longer text ends in "...".
std::string clip(const std::string &s, size_t n) {
  if (s.size() <= n) return s;
  size_t cut = n > 3 ? n - 3 : 0;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "...";
}

// Monospace text: about 7.2 px per character at 12 px.
constexpr double kChar = 7.2;

class Svg {
public:
  void text(double x, double y, const std::string &s, const std::string &attrs = "") {
    body_ += fmt::format("<text x=\"{}\" y=\"{}\"{}{}>{}</text>\n", svgNumber(x), svgNumber(y), attrs.empty() ? "" : " ",
                         attrs, xmlText(s));
  }
  void rect(double x, double y, double w, double h, const std::string &fill, const std::string &extra = "") {
    body_ += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"{}{}/>\n", svgNumber(x),
                         svgNumber(y), svgNumber(w), svgNumber(h), fill, extra.empty() ? "" : " ", extra);
  }
  void raw(const std::string &s) { body_ += s; }
  std::string document(double width, double height) const {
    return fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
                       "font-family=\"DejaVu Sans Mono, monospace\" font-size=\"12\">\n"
                       "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n{2}</svg>\n",
                       svgNumber(width), svgNumber(height), body_);
  }

private:
  std::string body_;
};

// White (0) to dark blue (1).
std::string heat(double w) {
  w = std::clamp(std::isfinite(w) ? w : 0.0, 0.0, 1.0);
  auto c = [&](int lo) { return int(std::lround(255 - w * (255 - lo))); };
  return fmt::format("rgb({},{},{})", c(8), c(81), c(156));
}

// A weight in a cell: "1", ".25" (two decimals, no leading zero, to fit).
std::string weightLabel(double w) {
  std::string s = fmt::format("{:.2f}", w);
  if (s == "1.00") return "1";
  return s.rfind("0.", 0) == 0 ? s.substr(1) : s;
}

std::string renderSvg(const Picture &pic) {
  Svg svg;
  const size_t n = pic.tokens.size();
  size_t tokenChars = 3;
  for (auto &t : pic.tokens) tokenChars = std::max(tokenChars, std::min<size_t>(t.size(), 8));
  const double cell = std::clamp(std::floor(300.0 / double(n)), 8.0, 30.0);
  const double labelW = double(tokenChars) * kChar + 10;
  const double gridW = cell * double(n);
  const double panelW = std::max(labelW + gridW + 20, 260.0);
  const double panelH = 40 + labelW + gridW + 16; // title, column labels (rotated), grid
  double y = 28, width = 900;
  svg.text(16, y, pic.title, "font-size=\"15\" font-weight=\"bold\"");
  y += 26;
  svg.text(16, y, "Attention patterns: rows are queries, columns keys; each head titled by the node it computes.",
           "fill=\"#444\"");
  y += 14;
  if (pic.heads.empty()) {
    y += 18;
    svg.text(16, y, "(no head computes a node: the model has no attention)", "fill=\"#444\"");
    y += 10;
  }
  // One row of panels per layer.
  int lastLayer = -2;
  double x = 16, rowTop = y;
  for (const HeadPanel &hp : pic.heads) {
    if (hp.layer != lastLayer) {
      if (lastLayer != -2) rowTop += panelH + 10;
      x = 16;
      lastLayer = hp.layer;
    }
    const double titleChars = std::floor((panelW - 8) / kChar);
    svg.text(x, rowTop + 20, clip(fmt::format("layer {} head {}", hp.layer, hp.head), size_t(titleChars)),
             "font-weight=\"bold\"");
    svg.text(x, rowTop + 36, clip(hp.label, size_t(titleChars)), "fill=\"#08519c\"");
    const double gx = x + labelW, gy = rowTop + 40 + labelW;
    for (size_t k = 0; k < n; ++k) { // key labels, rotated, above the columns
      double cx = gx + cell * double(k) + cell / 2 + 4;
      svg.text(cx, gy - 4, clip(pic.tokens[k], 8), fmt::format("transform=\"rotate(-90 {} {})\"", svgNumber(cx), svgNumber(gy - 4)));
    }
    for (size_t q = 0; q < n; ++q) {
      svg.text(gx - 6, gy + cell * double(q) + cell / 2 + 4, clip(pic.tokens[q], 8), "text-anchor=\"end\"");
      for (size_t k = 0; k < n; ++k) {
        double w = Eigen::Index(q) < hp.pattern.rows() && Eigen::Index(k) < hp.pattern.cols()
                       ? hp.pattern(Eigen::Index(q), Eigen::Index(k))
                       : 0.0;
        svg.rect(gx + cell * double(k), gy + cell * double(q), cell, cell, heat(w), "stroke=\"#ddd\" stroke-width=\"0.5\"");
        if (cell >= 24 && w >= 0.01)
          svg.text(gx + cell * (double(k) + 0.5), gy + cell * (double(q) + 0.5) + 3, weightLabel(w),
                   fmt::format("font-size=\"9\" text-anchor=\"middle\" fill=\"{}\"", w > 0.5 ? "white" : "black"));
      }
    }
    x += panelW;
    width = std::max(width, x + 16);
  }
  y = pic.heads.empty() ? y : rowTop + panelH + 10;

  // The decoded values: one table per step.
  y += 24;
  svg.text(16, y, "Decoded s-ops: each node's value read from the residual stream after each sublayer;",
           "fill=\"#444\"");
  y += 16;
  svg.text(16, y, "bold on yellow: the nodes that sublayer computes.", "fill=\"#444\"");
  y += 10;
  for (const Step &st : pic.steps) {
    size_t nameChars = 4, valueChars = 3;
    for (auto &[name, vals] : st.values) {
      nameChars = std::max(nameChars, std::min<size_t>(name.size(), 28));
      for (auto &v : vals) valueChars = std::max(valueChars, std::min<size_t>(formatScalar(v).size(), 12));
    }
    for (size_t k = 1; k < n; ++k) valueChars = std::max(valueChars, std::min<size_t>(pic.tokens[k].size(), 12));
    const double nameW = double(nameChars) * kChar + 12, colW = double(valueChars) * kChar + 12, rowH = 18;
    y += 26;
    svg.text(16, y, stepName(st), "font-weight=\"bold\"");
    y += 8;
    // Header: each position's index and token.
    svg.rect(16, y, nameW + colW * double(n - 1), rowH, "#eeeeee");
    svg.text(20, y + 13, "input", "fill=\"#444\"");
    for (size_t k = 1; k < n; ++k)
      svg.text(16 + nameW + colW * double(k - 1) + 6, y + 13, clip(pic.tokens[k], 12), "fill=\"#444\"");
    y += rowH;
    for (size_t r = 0; r < st.values.size(); ++r) {
      auto &[name, vals] = st.values[r];
      bool fresh = st.fresh[r];
      if (fresh) svg.rect(16, y, nameW + colW * double(n - 1), rowH, "#fff3bf");
      std::string weight = fresh ? "font-weight=\"bold\"" : "";
      svg.text(20, y + 13, clip(name, 28), weight);
      for (size_t k = 0; k < vals.size(); ++k)
        svg.text(16 + nameW + colW * double(k) + 6, y + 13, clip(formatScalar(vals[k]), 12), weight);
      svg.raw(fmt::format("<line x1=\"16\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#ddd\"/>\n", svgNumber(y + rowH),
                          svgNumber(16 + nameW + colW * double(n - 1))));
      y += rowH;
    }
    width = std::max(width, 16 + nameW + colW * double(n - 1) + 16);
  }
  return svg.document(width, y + 24);
}

std::string htmlEscape(const std::string &s) { return xmlText(s); }

std::string renderHtml(const Picture &pic, const std::string &svg) {
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
                  htmlEscape(pic.title) +
                  "</title>\n<style>\nbody { font-family: sans-serif; margin: 2em; }\n"
                  "table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-family: monospace; }\n"
                  "td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }\n"
                  "th { background: #eee; }\ntr.fresh td { background: #fff3bf; font-weight: bold; }\n</style>\n"
                  "</head>\n<body>\n<h1>" +
                  htmlEscape(pic.title) + "</h1>\n";
  h += svg.substr(svg.find("<svg")); // the same picture, inline
  h += "<h2>Decoded s-ops after each sublayer</h2>\n";
  const size_t n = pic.tokens.size();
  for (const Step &st : pic.steps) {
    h += "<h3>" + htmlEscape(stepName(st)) + "</h3>\n<table>\n<tr><th>node</th>";
    for (size_t k = 1; k < n; ++k) h += fmt::format("<th>{}: {}</th>", k - 1, htmlEscape(pic.tokens[k]));
    h += "</tr>\n";
    for (size_t r = 0; r < st.values.size(); ++r) {
      h += st.fresh[r] ? "<tr class=\"fresh\">" : "<tr>";
      h += "<td>" + htmlEscape(st.values[r].first) + "</td>";
      for (const Scalar &v : st.values[r].second) h += "<td>" + htmlEscape(formatScalar(v)) + "</td>";
      h += "</tr>\n";
    }
    h += "</table>\n";
  }
  return h + "</body>\n</html>\n";
}

} // namespace

int runShow(const std::string &modelPath, const std::string &input, const std::string &out, bool force,
            int64_t maxParams) {
  llvm::StringRef ext = llvm::StringRef(out).rsplit('.').second;
  const bool html = ext.equals_insensitive("html") || ext.equals_insensitive("htm");
  if (!html && !ext.equals_insensitive("svg")) {
    error("-o " + out + ": name an .svg or .html file (the format follows the extension)");
    return 2;
  }
  files::OutputRule rule{force, {modelPath}};
  if (int rc = checkOutputs({{"-o", out}}, rule)) return rc;
  auto m = readModel(modelPath, maxParams);
  if (!m) {
    error(llvm::toString(m.takeError()));
    return 1;
  }
  auto exec = Executor::create(*m);
  if (!exec) {
    error(llvm::toString(exec.takeError()));
    return 1;
  }
  std::vector<std::string> tokens = splitArgs(input);
  if (tokens.size() > size_t(exec->maxLength())) {
    error(fmt::format("--input: {} tokens, more than the model's maximum length {}", tokens.size(), exec->maxLength()));
    return 1;
  }
  Picture pic;
  pic.tokens.push_back("BOS");
  pic.tokens.insert(pic.tokens.end(), tokens.begin(), tokens.end());
  auto labels = headLabels(*m);
  Eigen::MatrixXd entering;
  TraceFn fn = [&](int layer, const std::string &sub, const Eigen::MatrixXd &res, int) {
    if (sub == "attn") {
      auto all = attentionPatterns(*m, layer, entering);
      for (int h = 0; h < int(all.size()); ++h)
        if (auto it = labels.find({layer, h}); it != labels.end())
          pic.heads.push_back({layer, h, it->second, std::move(all[size_t(h)])});
    }
    entering = res;
    Step st{layer, sub, decodeNodes(*m, res), {}};
    // A node is fresh where it is computed: its own layer and sublayer.
    for (auto &[name, vals] : st.values) {
      bool fresh = false;
      for (const NodeInfo &n : m->nodes)
        if (nodeLabel(n) == name && n.layer == layer && n.sublayer == sub) fresh = true;
      st.fresh.push_back(fresh);
    }
    pic.steps.push_back(std::move(st));
  };
  auto outs = exec->run({tokens}, &fn);
  if (!outs) {
    llvm::Error err = outs.takeError();
    llvm::handleAllErrors(
        std::move(err), [&](const InputError &e) { error("--input: " + e.detail); },
        [&](const llvm::ErrorInfoBase &e) { error(e.message()); });
    return 1;
  }
  pic.title = fmt::format("{} on \"{}\": {} = {}", m->sourceName.empty() ? modelPath : m->sourceName, input,
                          m->outputName, formatSequence((*outs)[0], false));
  std::string svg = renderSvg(pic);
  std::string bytes = html ? renderHtml(pic, svg) : "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + svg;
  if (auto e = files::writeFileAtomically(out, bytes, rule)) {
    error(llvm::toString(std::move(e)));
    return 1;
  }
  std::cout << fmt::format("wrote {}: {} head{}, {} steps\n", out, pic.heads.size(), pic.heads.size() == 1 ? "" : "s",
                           pic.steps.size());
  return 0;
}

} // namespace raspc::tools
