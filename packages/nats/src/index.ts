export { createNatsTransport, NatsTransportError, type NatsTransport, type NatsTransportOptions } from './transport.js';
export { safeName } from './names.js';
