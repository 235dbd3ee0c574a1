// A small reader/writer for NumPy .npy files holding little-endian float32 arrays in C order,
// the exchange format between e2evision (Python) and the C++ tool. Anything else (another dtype,
// big-endian, Fortran order, truncated data) throws NpyError naming the file and the problem.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "e2evision/errors.h"

namespace e2evision {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;

  // Leading dimension (1 for a 0-d array).
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  // Values per leading index (the product of the other dimensions).
  int64_t rowSize() const;
};

NpyArray readNpy(const std::string& path);
void writeNpy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data);

// "(3, 2, 32, 32)"-style rendering used in messages.
std::string shapeString(const std::vector<int64_t>& shape);

}  // namespace e2evision
