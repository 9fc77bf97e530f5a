export { createHttpApi, MAX_PARAM_LENGTH, type HttpApiOptions, type ServedProjection } from './api.js';
export { parseJsonBody } from './json-body.js';
export { HttpProblem, problemOf, STATUS_OF_CODE, type Problem } from './problems.js';
