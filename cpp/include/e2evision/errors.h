// Named exceptions of the e2evision C++ engine. Every failure the caller can cause (a wrong input
// name or size, a missing or corrupt model or preprocess.json, a malformed .npy file) throws one
// of these with a message naming the file, field or input and the problem; nothing aborts.
#pragma once

#include <stdexcept>
#include <string>

namespace e2evision {

class EngineError : public std::runtime_error {
 public:
  EngineError(const std::string& kind, const std::string& message)
      : std::runtime_error(kind + ": " + message), kind_(kind) {}
  // "InputError", "ModelFileError", "PreprocessError", "NpyError" or "BackendError".
  const std::string& kind() const noexcept { return kind_; }

 private:
  std::string kind_;
};

// An input that is not provided, unknown, of the wrong flat size or shape; an unknown output name.
class InputError : public EngineError {
 public:
  explicit InputError(const std::string& message) : EngineError("InputError", message) {}
};

// The model file is missing, unreadable, truncated or not a model of the expected format.
class ModelFileError : public EngineError {
 public:
  explicit ModelFileError(const std::string& message) : EngineError("ModelFileError", message) {}
};

// preprocess.json is missing, not JSON, or does not describe a valid contract.
class PreprocessError : public EngineError {
 public:
  explicit PreprocessError(const std::string& message) : EngineError("PreprocessError", message) {}
};

// A .npy file is missing, malformed, or not little-endian float32 in C order.
class NpyError : public EngineError {
 public:
  explicit NpyError(const std::string& message) : EngineError("NpyError", message) {}
};

// The backend failed while running a model that loaded fine (or is not compiled in).
class BackendError : public EngineError {
 public:
  explicit BackendError(const std::string& message) : EngineError("BackendError", message) {}
};

}  // namespace e2evision
