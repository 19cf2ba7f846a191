// The ALS options' one check, shared by the CPU engine, the CUDA engine and both bindings, so
// that every entry point accepts exactly the same values and says the same thing about the
// ones it refuses. Header-only: the CUDA module does not link the CPU engine.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>

#include "recore/als.hpp"

namespace recore {

// Throws std::invalid_argument naming the first invalid option. cg_steps, block_size and
// subspace_sweeps must be >= 1 for every solver (each is read by one solver only, but a value
// that could never be used is refused wherever it is given, rather than accepted by one solver
// and refused by another).
inline void check_als_options(const AlsOptions& o) {
  if (!(o.regularization >= 0) || !std::isfinite(o.regularization))
    throw std::invalid_argument("regularization must be a finite number >= 0, got " +
                                std::to_string(o.regularization));
  if (!(o.alpha >= 0) || !std::isfinite(o.alpha))
    throw std::invalid_argument("alpha must be a finite number >= 0, got " + std::to_string(o.alpha));
  if (o.cg_steps < 1) throw std::invalid_argument("cg_steps must be >= 1, got " + std::to_string(o.cg_steps));
  if (o.num_threads < 0) throw std::invalid_argument("num_threads must be >= 0, got " + std::to_string(o.num_threads));
  if (!(o.unobserved_weight >= 0) || !std::isfinite(o.unobserved_weight))
    throw std::invalid_argument("unobserved_weight must be a finite number >= 0, got " +
                                std::to_string(o.unobserved_weight));
  if (!(o.regularization_exponent >= 0) || !std::isfinite(o.regularization_exponent))
    throw std::invalid_argument("regularization_exponent must be a finite number >= 0, got " +
                                std::to_string(o.regularization_exponent));
  if (o.block_size < 1) throw std::invalid_argument("block_size must be >= 1, got " + std::to_string(o.block_size));
  if (o.subspace_sweeps < 1)
    throw std::invalid_argument("subspace_sweeps must be >= 1, got " + std::to_string(o.subspace_sweeps));
  // Explicit feedback has no unobserved entries to weigh.
  if (o.feedback == Feedback::explicit_ratings && o.unobserved_weight != 1.0)
    throw std::invalid_argument("unobserved_weight applies to implicit feedback only (explicit feedback has no "
                                "unobserved entries): leave it at 1.0, got " + std::to_string(o.unobserved_weight));
  // Both scale the regularization by the row's count; one of them at a time.
  if (o.weighted_regularization && o.regularization_exponent != 0.0)
    throw std::invalid_argument("regularization_exponent and weighted_regularization both scale the regularization "
                                "by the row's count: use one (weighted_regularization is regularization_exponent=1 "
                                "for explicit feedback), got regularization_exponent=" +
                                std::to_string(o.regularization_exponent));
}

// The options from their names as Python spells them, checked by check_als_options.
inline AlsOptions als_options_from_names(const std::string& feedback, const std::string& confidence,
                                         const std::string& solver, double regularization, double alpha, int cg_steps,
                                         bool weighted_regularization, int num_threads, double unobserved_weight,
                                         double regularization_exponent, int block_size, int subspace_sweeps) {
  AlsOptions o;
  if (feedback == "implicit") o.feedback = Feedback::implicit;
  else if (feedback == "explicit") o.feedback = Feedback::explicit_ratings;
  else throw std::invalid_argument("feedback must be 'implicit' or 'explicit', got '" + feedback + "'");
  if (confidence == "linear") o.confidence = Confidence::linear;
  else if (confidence == "scaled") o.confidence = Confidence::scaled;
  else throw std::invalid_argument("confidence must be 'linear' or 'scaled', got '" + confidence + "'");
  if (solver == "cg") o.solver = Solver::conjugate_gradient;
  else if (solver == "cholesky") o.solver = Solver::cholesky;
  else if (solver == "subspace") o.solver = Solver::subspace;
  else throw std::invalid_argument("solver must be 'cg', 'cholesky' or 'subspace', got '" + solver + "'");
  o.regularization = regularization;
  o.alpha = alpha;
  o.cg_steps = cg_steps;
  o.weighted_regularization = weighted_regularization;
  o.num_threads = num_threads;
  o.unobserved_weight = unobserved_weight;
  o.regularization_exponent = regularization_exponent;
  o.block_size = block_size;
  o.subspace_sweeps = subspace_sweeps;
  check_als_options(o);
  return o;
}

}  // namespace recore
