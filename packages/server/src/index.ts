export { createHttpApi, type HttpApiOptions } from './api.js';
export { problemOf, type Problem } from './problems.js';
