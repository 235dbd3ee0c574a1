#include "e2evision/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace e2evision {

namespace {

bool hostIsLittleEndian() {
  const uint16_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// The value of `key` in the header dict, e.g. "'<f4'" or "(3, 2)", as written by numpy.
std::string headerField(const std::string& header, const std::string& key, const std::string& path) {
  auto k = header.find("'" + key + "'");
  if (k == std::string::npos) throw NpyError(path + ": header has no '" + key + "' field");
  auto colon = header.find(':', k);
  if (colon == std::string::npos) throw NpyError(path + ": malformed header near '" + key + "'");
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) throw NpyError(path + ": malformed header near '" + key + "'");
  size_t end;
  if (header[start] == '(') {
    end = header.find(')', start);
    if (end == std::string::npos) throw NpyError(path + ": malformed shape in header");
    ++end;
  } else if (header[start] == '\'' || header[start] == '"') {
    end = header.find(header[start], start + 1);
    if (end == std::string::npos) throw NpyError(path + ": malformed header near '" + key + "'");
    ++end;
  } else {
    end = header.find_first_of(",}", start);
  }
  return header.substr(start, end - start);
}

}  // namespace

int64_t NpyArray::rowSize() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

std::string shapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

NpyArray readNpy(const std::string& path) {
  if (!hostIsLittleEndian()) throw NpyError("this reader supports little-endian hosts only");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError(path + ": file not found or unreadable");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw NpyError(path + ": not a .npy file (bad magic bytes)");
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) throw NpyError(path + ": truncated header");
    header_len = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) throw NpyError(path + ": truncated header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw NpyError(path + ": unsupported .npy format version " + std::to_string(major));
  }
  if (header_len > (1u << 20)) throw NpyError(path + ": implausible header length");
  std::string header(header_len, '\0');
  if (!in.read(&header[0], header_len)) throw NpyError(path + ": truncated header");

  std::string descr = headerField(header, "descr", path);
  if (descr != "'<f4'") {
    std::string why = descr == "'>f4'" ? "big-endian float32" : "dtype " + descr;
    throw NpyError(path + ": " + why + " is not supported; write little-endian float32 ('<f4'), e.g. "
                   "np.save(path, np.ascontiguousarray(x, dtype='<f4'))");
  }
  std::string fortran = headerField(header, "fortran_order", path);
  if (fortran != "False")
    throw NpyError(path + ": Fortran-ordered arrays are not supported; save a C-ordered array (np.ascontiguousarray)");

  NpyArray arr;
  std::string shape = headerField(header, "shape", path);
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') throw NpyError(path + ": malformed shape " + shape);
  std::stringstream ss(shape.substr(1, shape.size() - 2));
  std::string item;
  int64_t count = 1;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(' '), b = item.find_last_not_of(' ');
    if (a == std::string::npos) continue;  // trailing comma of a 1-tuple
    item = item.substr(a, b - a + 1);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
      throw NpyError(path + ": malformed shape " + shape);
    int64_t d = std::stoll(item);
    arr.shape.push_back(d);
    if (d > 0 && count > (int64_t{1} << 40) / d) throw NpyError(path + ": implausibly large shape " + shape);
    count *= d;
  }
  const std::streampos data_start = in.tellg();
  in.seekg(0, std::ios::end);
  const int64_t available = static_cast<int64_t>(in.tellg() - data_start);
  const int64_t needed = count * static_cast<int64_t>(sizeof(float));
  if (available != needed) {
    std::ostringstream os;
    os << path << ": shape " << shapeString(arr.shape) << " needs " << needed << " bytes of data, the file has "
       << available << (available < needed ? " (truncated)" : " (trailing bytes)");
    throw NpyError(os.str());
  }
  in.seekg(data_start);
  arr.data.resize(static_cast<size_t>(count));
  if (count > 0 && !in.read(reinterpret_cast<char*>(arr.data.data()), needed)) throw NpyError(path + ": read failed");
  return arr;
}

void writeNpy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data) {
  int64_t count = 1;
  for (auto d : shape) count *= d;
  if (count != static_cast<int64_t>(data.size()))
    throw NpyError(path + ": shape " + shapeString(shape) + " does not match " + std::to_string(data.size()) + " values");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shapeString(shape) + ", }";
  // Pad with spaces so that magic + length + header + '\n' is a multiple of 64 bytes (numpy's layout).
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw NpyError(path + ": cannot open for writing");
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char prefix[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(prefix, 8);
  const unsigned char lb[2] = {static_cast<unsigned char>(len & 0xFF), static_cast<unsigned char>(len >> 8)};
  out.write(reinterpret_cast<const char*>(lb), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
  if (!out) throw NpyError(path + ": write failed");
}

}  // namespace e2evision
