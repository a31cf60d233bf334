#include "Convert.h"

#include <nanobind/ndarray.h>

#include <cstring>

namespace raspc::py {

Error diagnosticsError(const DiagnosticEngine &d, const llvm::SourceMgr &sm, std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const auto &first = d.firstError();
  if (!first) return Error(text.empty() ? "raspc: error" : text);
  std::string file;
  unsigned line = 0, col = 0;
  llvm::SMLoc loc = first->first;
  if (unsigned buf = loc.isValid() ? sm.FindBufferContainingLoc(loc) : 0) {
    std::tie(line, col) = sm.getLineAndColumn(loc, buf);
    file = sm.getMemoryBuffer(buf)->getBufferIdentifier().str();
  }
  return Error(text.empty() ? first->second : text, first->second, file, line, col);
}

void throwError(llvm::Error e) { throw Error(llvm::toString(std::move(e))); }

static nb::str utf8(const std::string &s) {
  // RASP strings are bytes; bytes that are not UTF-8 come back as surrogates, as
  // os.fsdecode does, so that no value is lost or refused.
  PyObject *o = PyUnicode_DecodeUTF8(s.data(), Py_ssize_t(s.size()), "surrogateescape");
  if (!o) throw nb::python_error();
  return nb::steal<nb::str>(o);
}

nb::object toPython(const Scalar &s) {
  switch (s.index()) {
  case 0: return nb::none();
  case 1: return nb::bool_(std::get<bool>(s));
  case 2: return nb::int_(std::get<int64_t>(s));
  case 3: return nb::float_(std::get<double>(s));
  default: return utf8(std::get<std::string>(s));
  }
}

nb::list toPython(const std::vector<Scalar> &v) {
  nb::list out;
  for (const Scalar &s : v) out.append(toPython(s));
  return out;
}

static std::string typeName(nb::handle h) { return nb::cast<std::string>(nb::str(nb::handle(h.type()).attr("__name__"))); }

bool fromPython(nb::handle h, Scalar &out, std::string &error) {
  PyObject *o = h.ptr();
  if (o == Py_None) {
    out = Scalar{};
    return true;
  }
  if (PyBool_Check(o)) {
    out = o == Py_True;
    return true;
  }
  if (PyLong_Check(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) {
      error = "the int " + nb::cast<std::string>(nb::repr(h)) + " does not fit in 64 bits";
      return false;
    }
    out = int64_t(v);
    return true;
  }
  if (PyFloat_Check(o)) {
    out = PyFloat_AsDouble(o);
    return true;
  }
  if (PyUnicode_Check(o)) {
    PyObject *b = PyUnicode_AsEncodedString(o, "utf-8", "surrogateescape");
    if (!b) {
      PyErr_Clear();
      error = "the str " + nb::cast<std::string>(nb::repr(h)) + " cannot be encoded as UTF-8";
      return false;
    }
    out = std::string(PyBytes_AsString(b), size_t(PyBytes_Size(b)));
    Py_DECREF(b);
    return true;
  }
  // numpy scalars (numpy.int64, numpy.bool_, ...) as the Python values they stand for.
  nb::handle type = h.type();
  if (nb::hasattr(type, "__module__") && nb::cast<std::string>(nb::str(type.attr("__module__"))) == "numpy" &&
      nb::hasattr(h, "item")) {
    nb::object item = h.attr("item")();
    if (item.type().ptr() != type.ptr()) return fromPython(item, out, error);
  }
  error = "a " + typeName(h) + " is not a RASP value (int, float, str, bool or None)";
  return false;
}

std::string tokenOf(nb::handle h) {
  if (PyUnicode_Check(h.ptr())) {
    Scalar s;
    std::string error;
    if (!fromPython(h, s, error)) throw Error(error);
    return std::get<std::string>(s);
  }
  Scalar s;
  std::string error;
  if (!fromPython(h, s, error) || isNone(s))
    throw Error("a token must be a str, int, float or bool, not " +
                (isNone(s) && error.empty() ? std::string("None") : "a " + typeName(h)));
  return formatScalar(s);
}

std::vector<std::string> tokensOf(nb::handle seq) {
  if (PyUnicode_Check(seq.ptr()))
    throw Error("an input is a list of tokens, not a str (split it: \"1 2 3\".split())");
  std::vector<std::string> out;
  for (nb::handle t : seq) out.push_back(tokenOf(t));
  return out;
}

nb::object toNumpy(const Eigen::MatrixXd &m) {
  size_t r = size_t(m.rows()), c = size_t(m.cols());
  double *data = new double[r * c];
  for (size_t i = 0; i < r; ++i)
    for (size_t j = 0; j < c; ++j) data[i * c + j] = m(Eigen::Index(i), Eigen::Index(j));
  nb::capsule owner(data, [](void *p) noexcept { delete[] static_cast<double *>(p); });
  size_t shape[2] = {r, c};
  return nb::ndarray<nb::numpy, double>(data, 2, shape, owner).cast();
}

nb::object toNumpy(const std::vector<float> &v, const std::vector<int64_t> &shape) {
  float *data = new float[v.size() ? v.size() : 1];
  if (!v.empty()) std::memcpy(data, v.data(), v.size() * sizeof(float));
  nb::capsule owner(data, [](void *p) noexcept { delete[] static_cast<float *>(p); });
  std::vector<size_t> s(shape.begin(), shape.end());
  return nb::ndarray<nb::numpy, float>(data, s.size(), s.data(), owner).cast();
}

} // namespace raspc::py
