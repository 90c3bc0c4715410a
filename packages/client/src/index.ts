export { OcsClient, type ClientOptions, type OcsResponse, type CallOptions } from './sdk.js';
