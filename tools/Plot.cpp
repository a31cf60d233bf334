// The per-layer CRATE metrics as an SVG plot (tools/Plot.h).
#include "tools/Plot.h"

#include <fmt/format.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <unistd.h>

namespace raspc::tools {

namespace {

// Layout, in pixels: three panels side by side, each with its plot area.
constexpr double kPanelWidth = 340, kWidth = 3 * kPanelWidth, kHeight = 330;
constexpr double kLeft = 72, kRight = 320; // the plot area, from the panel's left edge
constexpr double kTop = 72, kBottom = 270;

} // namespace

// A coordinate: at most two decimals, no trailing zeros. Every coordinate is computed
// from finite values; a non-finite one (which would be a bug) is written as 0 rather
// than as "nan".
std::string svgNumber(double v) {
  if (!std::isfinite(v)) v = 0;
  std::string s = fmt::format("{:.2f}", v);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

// Text for an element or an attribute value: markup characters escaped, control
// characters as spaces, anything that is not valid UTF-8 (or not allowed in XML) as '?'.
std::string xmlText(const std::string &s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += (c < 0x20 || c == 0x7f) ? ' ' : char(c);
      }
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    ok = ok && !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) &&
         !(cp >= 0xD800 && cp <= 0xDFFF) && cp != 0xFFFE && cp != 0xFFFF;
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

namespace {

// 1, 2 or 5 times a power of ten, at least `rough` (> 0); 0 when out of range.
double niceStep(double rough) {
  double base = std::pow(10.0, std::floor(std::log10(rough)));
  if (!(base > 0) || !std::isfinite(base)) return 0;
  double f = rough / base;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * base;
}

// A tick value rounded to the decimals its step needs ("0.5", "52", "0.05"); very large
// or very small values in exponent form.
std::string tickLabel(double t, double step) {
  if (std::fabs(t) < step * 1e-6) t = 0; // not "-0.0" nor "1e-17"
  if (std::max(std::fabs(t), step) >= 1e7 || step < 1e-6) return fmt::format("{:.4g}", t);
  int decimals = std::clamp(int(-std::floor(std::log10(step) + 1e-9)), 0, 6);
  return fmt::format("{:.{}f}", t, decimals);
}

struct Axis {
  double lo = 0, hi = 1; // the values at the two ends of the axis, lo < hi
  std::vector<double> ticks;
  std::vector<std::string> labels;

  // The pixel of v, with lo at pixel a and hi at pixel b (halved first, so that no
  // difference of finite values overflows).
  double at(double v, double a, double b) const {
    return a + (v * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5) * (b - a);
  }
};

// The axis of a panel: a padded range around a constant series, else the range of the
// values widened to whole steps of 1, 2 or 5 x 10^k (about four to seven ticks).
Axis valueAxis(const std::vector<double> &finite) {
  Axis a;
  if (!finite.empty()) {
    auto [mn, mx] = std::minmax_element(finite.begin(), finite.end());
    a.lo = *mn;
    a.hi = *mx;
    if (!(a.hi - a.lo > 1e-9 * std::max(std::fabs(a.lo), std::fabs(a.hi)))) {
      double mid = a.lo * 0.5 + a.hi * 0.5, d = mid != 0 ? std::fabs(mid) * 0.1 : 1;
      a.lo = mid - d;
      a.hi = mid + d;
      if (!std::isfinite(a.lo)) a.lo = mid;
      if (!std::isfinite(a.hi)) a.hi = mid;
      if (!(a.hi > a.lo)) {
        a.lo = mid - 1;
        a.hi = mid + 1;
      }
    }
  }
  double step = niceStep((a.hi * 0.5 - a.lo * 0.5) / 2);
  if (step > 0 && std::isfinite(step)) {
    // (with a little slack, so that 0.55 / 0.05 = 11.000000000000002 stays 11)
    double first = std::floor(a.lo / step + 1e-9), last = std::ceil(a.hi / step - 1e-9);
    if (std::isfinite(first) && std::isfinite(last) && last - first <= 20 && std::isfinite(last * step)) {
      a.lo = first * step;
      a.hi = last * step;
      for (double k = first; k <= last; ++k) {
        a.ticks.push_back(k * step);
        a.labels.push_back(tickLabel(k * step, step));
      }
    }
  }
  if (a.ticks.size() < 2) {
    a.ticks = {a.lo, a.hi};
    a.labels = {fmt::format("{:.4g}", a.lo), fmt::format("{:.4g}", a.hi)};
  }
  return a;
}

// The layer axis: half a layer of room on each side, integer ticks (every 2, 5, 10, ...
// layers when there are many).
Axis layerAxis(int first, int last) {
  Axis a;
  a.lo = first - 0.5;
  a.hi = last + 0.5;
  long long n = (long long)last - first + 1;
  long long step = n <= 12 ? 1 : std::max(1LL, (long long)niceStep(double(n) / 8));
  long long l = first >= 0 ? (first + step - 1) / step * step : -(-(long long)first / step * step);
  for (; l <= last; l += step) {
    a.ticks.push_back(double(l));
    a.labels.push_back(std::to_string(l));
  }
  return a;
}

struct Series {
  const char *id, *title, *color;
  double CrateLayerMetrics::*field;
};

constexpr Series kSeries[] = {
    {"R", "coding rate R(Z)", "#1f77b4", &CrateLayerMetrics::R},
    {"Rc", "compression term R^c(Z; U)", "#d62728", &CrateLayerMetrics::Rc},
    {"sparsity", "sparsity after ISTA", "#2ca02c", &CrateLayerMetrics::sparsity},
};

void panel(std::string &svg, const std::vector<CrateLayerMetrics> &ms, const Axis &xs, const Series &s,
           double origin) {
  const double left = origin + kLeft, right = origin + kRight;
  std::vector<double> finite;
  std::vector<int> leftOut;
  for (const CrateLayerMetrics &m : ms) {
    double v = m.*s.field;
    if (std::isfinite(v)) finite.push_back(v);
    else leftOut.push_back(m.layer);
  }
  Axis ys = valueAxis(finite);
  svg += fmt::format("<g id=\"panel-{}\">\n", s.id);
  svg += fmt::format("<text x=\"{}\" y=\"56\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n",
                     svgNumber((left + right) / 2), xmlText(s.title));
  // Grid lines at the value ticks, then the axes and the tick marks.
  svg += "<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n";
  for (double t : ys.ticks) {
    std::string y = svgNumber(ys.at(t, kBottom, kTop));
    svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n", svgNumber(left), y, svgNumber(right), y);
  }
  svg += "</g>\n<g stroke=\"#333333\" stroke-width=\"1\" fill=\"none\">\n";
  svg += fmt::format("<path d=\"M{} {}V{}H{}\"/>\n", svgNumber(left), svgNumber(kTop), svgNumber(kBottom), svgNumber(right));
  for (double t : ys.ticks) {
    std::string y = svgNumber(ys.at(t, kBottom, kTop));
    svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n", svgNumber(left - 5), y, svgNumber(left), y);
  }
  for (double t : xs.ticks) {
    std::string x = svgNumber(xs.at(t, left, right));
    svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n", x, svgNumber(kBottom), x, svgNumber(kBottom + 5));
  }
  svg += "</g>\n<g font-size=\"11\" fill=\"#333333\" text-anchor=\"end\">\n";
  for (size_t i = 0; i < ys.ticks.size(); ++i)
    svg += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", svgNumber(left - 8), svgNumber(ys.at(ys.ticks[i], kBottom, kTop) + 4),
                       xmlText(ys.labels[i]));
  svg += "</g>\n<g font-size=\"11\" fill=\"#333333\" text-anchor=\"middle\">\n";
  for (size_t i = 0; i < xs.ticks.size(); ++i)
    svg += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", svgNumber(xs.at(xs.ticks[i], left, right)), svgNumber(kBottom + 18),
                       xmlText(xs.labels[i]));
  svg += fmt::format("<text x=\"{}\" y=\"{}\">layer</text>\n</g>\n", svgNumber((left + right) / 2), svgNumber(kBottom + 40));
  // The values: one polyline per run of finite values, a marker (with the value as its
  // tooltip) per layer.
  std::string line, markers;
  auto endLine = [&] {
    if (line.empty()) return;
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", s.color, line);
    line.clear();
  };
  for (const CrateLayerMetrics &m : ms) {
    double v = m.*s.field;
    if (!std::isfinite(v)) {
      endLine();
      continue;
    }
    std::string x = svgNumber(xs.at(m.layer, left, right)), y = svgNumber(ys.at(v, kBottom, kTop));
    line += (line.empty() ? "" : " ") + x + "," + y;
    markers += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3.5\"><title>layer {}: {:.6g}</title></circle>\n", x, y,
                           m.layer, v);
  }
  endLine();
  svg += fmt::format("<g fill=\"{}\">\n{}</g>\n", s.color, markers);
  if (!leftOut.empty()) {
    std::string which;
    for (size_t i = 0; i < leftOut.size() && i < 8; ++i) which += (i ? ", " : "") + std::to_string(leftOut[i]);
    if (leftOut.size() > 8) which += ", ...";
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#aa0000\">not finite, left out: layer{} "
                       "{}</text>\n",
                       svgNumber(left + 6), svgNumber(kTop + 12), leftOut.size() > 1 ? "s" : "", which);
  }
  svg += "</g>\n";
}

} // namespace

std::string metricsSvg(const std::vector<CrateLayerMetrics> &ms, const std::string &title) {
  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  svg += fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{0}\" height=\"{1}\" "
                     "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\">\n",
                     svgNumber(kWidth), svgNumber(kHeight));
  svg += fmt::format("<title>{}</title>\n", xmlText(title));
  svg += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", svgNumber(kWidth), svgNumber(kHeight));
  // The title line: in smaller type when long (about 0.65 em a character), and squeezed
  // into the width when even 8 pixels is too wide.
  const double room = kWidth - 32;
  const double chars = double(std::count_if(title.begin(), title.end(), [](char ch) { return (ch & 0xC0) != 0x80; }));
  double size = 15;
  if (0.65 * size * chars > room) size = std::max(8.0, std::floor(room / (0.65 * chars)));
  std::string squeeze = 0.65 * size * chars > room
                            ? fmt::format(" textLength=\"{}\" lengthAdjust=\"spacingAndGlyphs\"", svgNumber(room))
                            : "";
  svg += fmt::format("<text x=\"16\" y=\"28\" font-size=\"{}\" font-weight=\"bold\"{}>{}</text>\n", svgNumber(size),
                     squeeze, xmlText(title));
  if (ms.empty()) {
    svg += "<text x=\"16\" y=\"60\" font-size=\"13\">no layers</text>\n</svg>\n";
    return svg;
  }
  auto [mn, mx] = std::minmax_element(ms.begin(), ms.end(), [](const CrateLayerMetrics &a, const CrateLayerMetrics &b) {
    return a.layer < b.layer;
  });
  Axis xs = layerAxis(mn->layer, mx->layer);
  for (size_t i = 0; i < std::size(kSeries); ++i) panel(svg, ms, xs, kSeries[i], double(i) * kPanelWidth);
  svg += "</svg>\n";
  return svg;
}

} // namespace raspc::tools
