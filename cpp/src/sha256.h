// SHA-256 of a file (FIPS 180-4), so the engine can check a model against preprocess.json's
// record before loading it: a model file with flipped bytes still loads and gives wrong numbers.
#pragma once

#include <string>

namespace e2evision::detail {

// Lower-case hex digest of the file's bytes; throws std::runtime_error if it cannot be read.
std::string sha256File(const std::string& path);

// Lower-case hex digest of a byte string (used by the tests against known vectors).
std::string sha256Hex(const std::string& bytes);

}  // namespace e2evision::detail
