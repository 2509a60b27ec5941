//! Forward kinematics of the serial chain a robot description declares.
//!
//! Joint i sits at `parent_from_joint` (translation `xyz`, then URDF-style fixed rotation `rpy` =
//! Rz(yaw) Ry(pitch) Rx(roll)) in its parent's frame and rotates about its `axis` by q_i; the tool point
//! sits at `parent_from_tool` in the last chain joint's frame. Joints marked `in_chain = false` (a gripper)
//! are not part of it.

use nalgebra::{Isometry3, Translation3, Unit, UnitQuaternion, Vector3};

/// One chain link: the fixed transform to the joint and its rotation axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub parent_from_joint: Isometry3<f64>,
    pub axis: Unit<Vector3<f64>>,
}

/// The serial chain from the robot base to the tool point.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub links: Vec<Link>,
    /// Index into the robot's joint list of each link's joint.
    pub joint_index: Vec<usize>,
    pub parent_from_tool: Isometry3<f64>,
}

impl Chain {
    /// `base_from_tool` for the chain joints' positions `q` (one per link, in chain order).
    pub fn base_from_tool(&self, q: &[f64]) -> Isometry3<f64> {
        let mut t = Isometry3::identity();
        for (link, qi) in self.links.iter().zip(q) {
            t = t * link.parent_from_joint * UnitQuaternion::from_axis_angle(&link.axis, *qi);
        }
        t * self.parent_from_tool
    }

    /// The tool point in the base frame, metres, from the full joint vector (robot order).
    pub fn tool_position(&self, joints: &[f64]) -> Vector3<f64> {
        let mut t = Isometry3::identity();
        for (link, j) in self.links.iter().zip(&self.joint_index) {
            let qi = joints.get(*j).copied().unwrap_or(0.0);
            t = t * link.parent_from_joint * UnitQuaternion::from_axis_angle(&link.axis, qi);
        }
        (t * self.parent_from_tool).translation.vector
    }
}

/// The fixed transform of a URDF `<origin xyz rpy>`.
pub fn origin(xyz: [f64; 3], rpy: [f64; 3]) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(xyz[0], xyz[1], xyz[2]),
        UnitQuaternion::from_euler_angles(rpy[0], rpy[1], rpy[2]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planar(lengths: &[f64]) -> Chain {
        let mut links = Vec::new();
        let mut prev = 0.0;
        for l in lengths {
            links.push(Link { parent_from_joint: origin([prev, 0.0, 0.0], [0.0; 3]), axis: Vector3::z_axis() });
            prev = *l;
        }
        Chain { joint_index: (0..links.len()).collect(), links, parent_from_tool: origin([prev, 0.0, 0.0], [0.0; 3]) }
    }

    #[test]
    fn planar_arm_matches_the_closed_form() {
        let c = planar(&[0.3, 0.25, 0.15]);
        let q = [-1.2, 1.0, 0.6];
        let p = c.tool_position(&q);
        let (mut a, mut x, mut y) = (0.0, 0.0, 0.0);
        for (l, qi) in [0.3, 0.25, 0.15].iter().zip(q) {
            a += qi;
            x += l * f64::cos(a);
            y += l * f64::sin(a);
        }
        assert!((p.x - x).abs() < 1e-12 && (p.y - y).abs() < 1e-12 && p.z.abs() < 1e-12);
    }

    #[test]
    fn rpy_is_urdf_fixed_axis_order() {
        // A yaw of +90 degrees maps x to y.
        let t = origin([0.0; 3], [0.0, 0.0, std::f64::consts::FRAC_PI_2]);
        let v = t * nalgebra::Point3::new(1.0, 0.0, 0.0);
        assert!((v.y - 1.0).abs() < 1e-12 && v.x.abs() < 1e-12);
        // roll then pitch then yaw about fixed axes: R = Rz Ry Rx.
        let (r, p, y) = (0.3, -0.2, 0.9);
        let q = origin([0.0; 3], [r, p, y]).rotation;
        let want = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), y)
            * UnitQuaternion::from_axis_angle(&Vector3::y_axis(), p)
            * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), r);
        assert!(q.angle_to(&want) < 1e-12);
    }
}
