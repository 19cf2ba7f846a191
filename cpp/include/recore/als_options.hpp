// The ALS options' one check, shared by the CPU engine, the CUDA engine and both bindings, so
// that every entry point accepts exactly the same values and says the same thing about the
// ones it refuses. Header-only: the CUDA module does not link the CPU engine.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>

#include "recore/als.hpp"

namespace recore {

// Throws std::invalid_argument naming the first invalid option. cg_steps must be >= 1 for
// every solver (it is read by CG only, but a value that could never be used is refused
// wherever it is given, rather than accepted by one solver and refused by the other).
inline void check_als_options(const AlsOptions& o) {
  if (!(o.regularization >= 0) || !std::isfinite(o.regularization))
    throw std::invalid_argument("regularization must be a finite number >= 0, got " +
                                std::to_string(o.regularization));
  if (!(o.alpha >= 0) || !std::isfinite(o.alpha))
    throw std::invalid_argument("alpha must be a finite number >= 0, got " + std::to_string(o.alpha));
  if (o.cg_steps < 1) throw std::invalid_argument("cg_steps must be >= 1, got " + std::to_string(o.cg_steps));
  if (o.num_threads < 0) throw std::invalid_argument("num_threads must be >= 0, got " + std::to_string(o.num_threads));
}

// The options from their names as Python spells them, checked by check_als_options.
inline AlsOptions als_options_from_names(const std::string& feedback, const std::string& confidence,
                                         const std::string& solver, double regularization, double alpha, int cg_steps,
                                         bool weighted_regularization, int num_threads) {
  AlsOptions o;
  if (feedback == "implicit") o.feedback = Feedback::implicit;
  else if (feedback == "explicit") o.feedback = Feedback::explicit_ratings;
  else throw std::invalid_argument("feedback must be 'implicit' or 'explicit', got '" + feedback + "'");
  if (confidence == "linear") o.confidence = Confidence::linear;
  else if (confidence == "scaled") o.confidence = Confidence::scaled;
  else throw std::invalid_argument("confidence must be 'linear' or 'scaled', got '" + confidence + "'");
  if (solver == "cg") o.solver = Solver::conjugate_gradient;
  else if (solver == "cholesky") o.solver = Solver::cholesky;
  else throw std::invalid_argument("solver must be 'cg' or 'cholesky', got '" + solver + "'");
  o.regularization = regularization;
  o.alpha = alpha;
  o.cg_steps = cg_steps;
  o.weighted_regularization = weighted_regularization;
  o.num_threads = num_threads;
  check_als_options(o);
  return o;
}

}  // namespace recore
