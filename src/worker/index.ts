export { CircuitBreaker, CircuitOpenError, type BreakerState } from './breaker.ts';
export { blockText, createProvider, localEmbedding, LocalProvider, OpenAIProvider, ProviderError, type EmbeddingProvider } from './providers.ts';
export { startWorker, type WorkerRuntime, type WorkerRuntimeOptions } from './runtime.ts';
export { createTaskList, embedBlock, type TaskName } from './tasks.ts';
