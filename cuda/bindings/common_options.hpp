// Hyperparameters from their Python spellings.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "recore/als.hpp"

namespace recore::cuda::bindings {

inline AlsOptions als_options(const std::string& feedback, const std::string& confidence, const std::string& solver,
                              double regularization, double alpha, int cg_steps, bool weighted) {
  namespace py = pybind11;
  AlsOptions o;
  if (feedback == "implicit") o.feedback = Feedback::implicit;
  else if (feedback == "explicit") o.feedback = Feedback::explicit_ratings;
  else throw py::value_error("feedback must be 'implicit' or 'explicit', got '" + feedback + "'");
  if (confidence == "linear") o.confidence = Confidence::linear;
  else if (confidence == "scaled") o.confidence = Confidence::scaled;
  else throw py::value_error("confidence must be 'linear' or 'scaled', got '" + confidence + "'");
  if (solver == "cg") o.solver = Solver::conjugate_gradient;
  else if (solver == "cholesky") o.solver = Solver::cholesky;
  else throw py::value_error("solver must be 'cg' or 'cholesky', got '" + solver + "'");
  o.regularization = regularization;
  o.alpha = alpha;
  o.cg_steps = cg_steps;
  o.weighted_regularization = weighted;
  return o;
}

}  // namespace recore::cuda::bindings
