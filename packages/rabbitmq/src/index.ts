export {
  createRabbitMqTransport,
  deleteRabbitMqTopology,
  DEFAULT_AMQP_URL,
  type RabbitMqReconnectOptions,
  type RabbitMqTransport,
  type RabbitMqTransportOptions,
} from './transport.js';
export { namesFor, partitionOf, type RabbitMqNames, type RetentionOptions } from './topology.js';
