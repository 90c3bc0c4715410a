export * from './body.js';
export * from './errors.js';
export * from './catalogue.js';
