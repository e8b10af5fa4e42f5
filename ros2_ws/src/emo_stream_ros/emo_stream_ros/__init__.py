"""ROS 2 integration of emo_stream: lifecycle node, message conversions, clip publisher, bag tools.

Modules: :mod:`~emo_stream_ros.node` (the lifecycle node, ``emo_stream_node``),
:mod:`~emo_stream_ros.params` (declared parameters), :mod:`~emo_stream_ros.inputs`
(topic inputs), :mod:`~emo_stream_ros.conversions` (Image/CompressedImage/audio
<-> numpy, EmotionState <-> message), :mod:`~emo_stream_ros.clip_publisher`
(a media file as image/audio topics at real rate), :mod:`~emo_stream_ros.bag`
(rosbags MCAP record/replay).
"""

__version__ = "0.1.0"
