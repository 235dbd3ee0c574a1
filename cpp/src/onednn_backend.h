// Internal: the oneDNN backend's C interface. The backend is a separate shared object
// (libe2evision_onednn.so) that the engine opens with dlopen(RTLD_LOCAL | RTLD_DEEPBIND), because
// LibTorch carries its own oneDNN 3.x and exports a few of its weak symbols (the std::call_once
// thunks that initialise oneDNN's JIT GEMM kernels, the primitive cache's std::future vtables);
// linked normally, the installed oneDNN 2.x would bind to those and run LibTorch's initialisers on
// its own objects (its GEMM then reports "unimplemented"). Deep binding keeps each oneDNN on its own
// symbols. Nothing allocated on one side is freed on the other: strings travel in caller buffers.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// One model input or output: its name and its shape without the batch axis.
struct E2evOneDnnTensor {
  const char* name;
  int rank;
  const int64_t* row_shape;
};

// Error codes: 0 none, 1 the model file is invalid (ModelFileError), 2 a backend failure.
typedef void* (*E2evOneDnnOpen)(const char* path, int threads, int n_inputs, const E2evOneDnnTensor* inputs,
                                int n_outputs, const char* const* output_names, int* code, char* err, size_t err_len);
// Row shape of output o (valid while the handle lives); *rank receives its length.
typedef const int64_t* (*E2evOneDnnOutputShape)(void* handle, int o, int* rank);
// inputs[i]: rows × input i, normalised, C order; outputs[o]: rows × output o. Thread-safe.
typedef int (*E2evOneDnnRun)(void* handle, const float* const* inputs, int64_t rows, float* const* outputs, char* err,
                             size_t err_len);
typedef void (*E2evOneDnnClose)(void* handle);

}  // extern "C"
