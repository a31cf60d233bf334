// The per-layer CRATE metrics as an SVG plot (raspc crate run | synth --plot;
// docs/crate.md).
#pragma once
#include "runtime/Crate.h"

#include <llvm/Support/Error.h>

#include <string>
#include <vector>

namespace raspc::tools {

// A standalone SVG 1.1 document: three panels side by side, the coding rate R(Z), the
// compression term R^c(Z; U) and the sparsity after ISTA, each against the layer index
// (axes, rounded tick labels, the values as a polyline with a marker per layer), under
// the line `title` (XML-escaped; invalid UTF-8 becomes '?').
//
// A non-finite value is left out: no marker, the line breaks there, and the panel names
// the layers left out. A constant series is drawn in the middle of a padded range; a
// single layer is one marker. Every number written is finite.
std::string metricsSvg(const std::vector<CrateLayerMetrics> &ms, const std::string &title);

// For every SVG raspc writes (also `raspc show`): a coordinate with at most two
// decimals and no trailing zeros (a non-finite value, a bug, as 0), and text for an
// element or attribute: markup escaped, control characters as spaces, invalid UTF-8 as '?'.
std::string svgNumber(double v);
std::string xmlText(const std::string &s);

} // namespace raspc::tools
