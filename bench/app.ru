# frozen_string_literal: true

# The benchmark's app, the same for every server: a small page, an upload
# endpoint that reads the whole body (so slow bodies reach it), large
# bodies for slow readers (/1m, /8m), and Rails' send_file of a file the
# server in front serves (/send_file?PATH, by X-Accel-Redirect when the
# server offers it).
require "digest"

use Rack::Sendfile, "X-Accel-Redirect"

# A body that is a file, as Rails' send_file gives one.
FileBody = Struct.new(:path) do
  def to_path = path

  def each
    File.open(path, "rb") { |file| while (chunk = file.read(1 << 16)) do yield chunk end }
  end
end

PAGE = "Hello, world! #{'.' * 100}\n"
PIECE = "x" * 65_536

run lambda { |env|
  if (mib = env["PATH_INFO"][%r{\A/(\d+)m\z}, 1])
    body = Enumerator.new { |out| (Integer(mib) * 16).times { out << PIECE } }
    return [200, { "content-type" => "application/octet-stream", "content-length" => (Integer(mib) << 20).to_s }, body]
  end
  if env["PATH_INFO"] == "/work"
    # A request that takes the app a while (milliseconds in the query), and
    # says which host ran it (TEST_HOST, for the failover benchmark).
    sleep Integer(env["QUERY_STRING"]) / 1000.0
    return [200, { "content-type" => "text/plain" }, [ENV.fetch("TEST_HOST", "local")]]
  end
  if env["PATH_INFO"] == "/send_file"
    path = Rack::Utils.unescape(env["QUERY_STRING"])
    return [200, { "content-type" => "application/octet-stream", "content-length" => File.size(path).to_s,
                   "content-disposition" => 'attachment; filename="big.bin"' }, FileBody.new(path)]
  end
  if env["PATH_INFO"] == "/upload"
    digest = Digest::SHA256.new
    size = 0
    while (chunk = env["rack.input"].read(1 << 16))
      digest << chunk
      size += chunk.bytesize
    end
    [200, { "content-type" => "text/plain" }, ["#{size} #{digest.hexdigest}"]]
  else
    [200, { "content-type" => "text/plain", "content-length" => PAGE.bytesize.to_s }, [PAGE]]
  end
}
