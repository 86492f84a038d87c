// One registration function per kernel family; module.cpp calls them all.
// Bindings only map names to front-end functions: no logic here.
#pragma once
#include <pybind11/pybind11.h>

namespace fastprune::bind {
void core(pybind11::module_& m);
void moments(pybind11::module_& m);
void influence(pybind11::module_& m);
}  // namespace fastprune::bind
