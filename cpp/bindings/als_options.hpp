// ALS hyperparameters from their Python spellings, checked: shared by the CPU and the CUDA
// bindings, so that both engines accept exactly the same values.
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "recore/als.hpp"

namespace recore::bindings {

inline AlsOptions parse_als_options(const std::string& feedback, const std::string& confidence, const std::string& solver,
                                     double regularization, double alpha, int cg_steps, bool weighted_regularization,
                                     int num_threads) {
  AlsOptions o;
  if (feedback == "implicit") o.feedback = Feedback::implicit;
  else if (feedback == "explicit") o.feedback = Feedback::explicit_ratings;
  else throw pybind11::value_error("feedback must be 'implicit' or 'explicit', got '" + feedback + "'");
  if (confidence == "linear") o.confidence = Confidence::linear;
  else if (confidence == "scaled") o.confidence = Confidence::scaled;
  else throw pybind11::value_error("confidence must be 'linear' or 'scaled', got '" + confidence + "'");
  if (solver == "cg") o.solver = Solver::conjugate_gradient;
  else if (solver == "cholesky") o.solver = Solver::cholesky;
  else throw pybind11::value_error("solver must be 'cg' or 'cholesky', got '" + solver + "'");
  if (!(regularization >= 0) || !std::isfinite(regularization))
    throw pybind11::value_error("regularization must be a finite number >= 0, got " + std::to_string(regularization));
  if (!(alpha >= 0) || !std::isfinite(alpha))
    throw pybind11::value_error("alpha must be a finite number >= 0, got " + std::to_string(alpha));
  if (o.solver == Solver::conjugate_gradient && cg_steps < 1)
    throw pybind11::value_error("cg_steps must be >= 1, got " + std::to_string(cg_steps));
  if (num_threads < 0) throw pybind11::value_error("num_threads must be >= 0, got " + std::to_string(num_threads));
  o.regularization = regularization;
  o.alpha = alpha;
  o.cg_steps = cg_steps;
  o.weighted_regularization = weighted_regularization;
  o.num_threads = num_threads;
  return o;
}

}  // namespace recore::bindings
