/**
 * The ImageNet normalisation constants, in a module without tfjs so image decoding can run in a
 * worker thread that never loads TensorFlow. Model inputs: pixel/255, then (v - mean) / std.
 */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];
